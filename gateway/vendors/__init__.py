"""The vendor registry: every vendor module the gateway can route to, by name."""

from __future__ import annotations

from gateway.vendors.base import Vendor
from gateway.vendors.cohere import Cohere
from gateway.vendors.genstudio import GenStudio
from gateway.vendors.openai_compatible import OpenAI, OpenAICompatible
from gateway.vendors.sandbox import Sandbox

VENDORS: dict[str, Vendor] = {
    vendor.name: vendor for vendor in (Sandbox(), OpenAI(), OpenAICompatible(), GenStudio(), Cohere())
}


def get_vendor(name: str) -> Vendor | None:
    return VENDORS.get(name)
