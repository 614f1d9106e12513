"""Development-only tools (local stand-ins for outside services); never imported by the app."""
