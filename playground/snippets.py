""" "View code": the request a playground run made, as curl, Python (openai SDK, or httpx where
the SDK has no call) and JavaScript.

The base URL is the console's own; the key is the placeholder `$INFRAI_KEY`.
"""

from __future__ import annotations

import json
from typing import Any

KEY = "$INFRAI_KEY"


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _py(value: Any, indent: int = 0) -> str:
    """A Python literal of a JSON value (True/False/None, double-quoted strings)."""
    pad, inner = " " * indent, " " * (indent + 4)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {_py(v, indent + 4)}," for k, v in value.items()]
        return "{\n" + "\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list):
        if not value:
            return "[]"
        return "[\n" + "\n".join(f"{inner}{_py(v, indent + 4)}," for v in value) + f"\n{pad}]"
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


def _kwargs(body: dict[str, Any], indent: int = 4) -> str:
    return "\n".join(f"{' ' * indent}{k}={_py(v, indent)}," for k, v in body.items())


def _shell_quoted(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _curl(base_url: str, path: str, body: dict[str, Any], stream: bool = False) -> str:
    return (
        f"curl {'-N ' if stream else ''}{base_url}/v1{path} \\\n"
        f'  -H "Authorization: Bearer {KEY}" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        f"  -d {_shell_quoted(_json(body))}"
    )


def _client(base_url: str) -> str:
    return f'from openai import OpenAI\n\nclient = OpenAI(base_url="{base_url}/v1", api_key="{KEY}")\n'


def _fetch(base_url: str, path: str, body: dict[str, Any], then: str) -> str:
    return (
        f'const response = await fetch("{base_url}/v1{path}", {{\n'
        '  method: "POST",\n'
        f'  headers: {{ "Authorization": "Bearer {KEY}", "Content-Type": "application/json" }},\n'
        f"  body: JSON.stringify({_json(body)}),\n"
        "});\n"
        f"{then}"
    )


JS_READ_STREAM = """const reader = response.body.getReader();
const decoder = new TextDecoder();
let buffer = "";
for (;;) {
  const { done, value } = await reader.read();
  if (done) break;
  buffer += decoder.decode(value, { stream: true });
  const lines = buffer.split("\\n");
  buffer = lines.pop();
  for (const line of lines) {
    if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
    const chunk = JSON.parse(line.slice(6));
    const text = chunk.choices?.[0]?.delta?.content;
    if (text) console.log(text);
  }
}"""


def chat(base_url: str, body: dict[str, Any]) -> dict[str, str]:
    """A chat run: /v1/chat/completions, streamed when the run streamed."""
    stream = bool(body.get("stream"))
    if body.get("model"):
        kwargs = _kwargs(body)
        if stream:
            python = (
                f"{_client(base_url)}stream = client.chat.completions.create(\n{kwargs}\n)\n"
                "for chunk in stream:\n"
                "    if chunk.choices and chunk.choices[0].delta.content:\n"
                '        print(chunk.choices[0].delta.content, end="", flush=True)\n'
            )
        else:
            python = (
                f"{_client(base_url)}reply = client.chat.completions.create(\n{kwargs}\n)\n"
                "print(reply.choices[0].message.content)\n"
            )
    else:
        # No model: Infrai routes by task and prefer, which the SDK's typed create() cannot
        # express without a model, so the SDK's plain POST carries the same body.
        plain = {**body, "stream": False}
        python = (
            f"{_client(base_url)}reply = client.post(\n"
            '    "/chat/completions",\n'
            "    cast_to=object,\n"
            f"    body={_py(plain, 4)},\n)\n"
            'print(reply["choices"][0]["message"]["content"])\n'
        )
    then = (
        JS_READ_STREAM
        if stream
        else "const reply = await response.json();\nconsole.log(reply.choices[0].message.content);"
    )
    return {
        "curl": _curl(base_url, "/chat/completions", body, stream),
        "python": python,
        "javascript": _fetch(base_url, "/chat/completions", body, then),
    }


def image(base_url: str, body: dict[str, Any]) -> dict[str, str]:
    return {
        "curl": _curl(base_url, "/images/generations", body),
        "python": (
            f"{_client(base_url)}result = client.images.generate(\n{_kwargs(body)}\n)\n"
            "for image in result.data:\n"
            "    print(image.url)\n"
        ),
        "javascript": _fetch(
            base_url,
            "/images/generations",
            body,
            "const result = await response.json();\nfor (const image of result.data) console.log(image.url);",
        ),
    }


def upscale(base_url: str, body: dict[str, Any]) -> dict[str, str]:
    return {
        "curl": _curl(base_url, "/ai/image/upscale", body),
        "python": (
            f'{_client(base_url)}result = client.post(\n    "/ai/image/upscale",\n    cast_to=object,\n'
            f"    body={_py(body, 4)},\n)\n"
            'print(result["image"], result["new_size"])\n'
        ),
        "javascript": _fetch(
            base_url,
            "/ai/image/upscale",
            body,
            "const result = await response.json();\nconsole.log(result.image, result.new_size);",
        ),
    }


def _heredoc(text: str) -> str:
    return text.replace("\\", "\\\\").replace("$", "\\$").replace("`", "\\`")


def vision(base_url: str, prompt: str, filename: str, mime: str) -> dict[str, str]:
    """A vision run on a local file; the image travels as base64 (the playground's upload)."""
    marker = "@@IMAGE@@"
    body = {"prompt": prompt, "images": [{"base64": marker, "mime": mime}]}
    curl_body = _heredoc(_json(body)).replace(marker, "$IMAGE")
    name = filename or "image.png"
    python_body = _py(body, 4).replace(f'"{marker}"', "image")
    js_body = _json(body).replace(f'"{marker}"', "image")
    return {
        "curl": (
            f"IMAGE=$(base64 < {_shell_quoted(name)} | tr -d '\\n')\n"
            f"curl {base_url}/v1/ai/vision \\\n"
            f'  -H "Authorization: Bearer {KEY}" \\\n'
            '  -H "Content-Type: application/json" \\\n'
            f"  -d @- <<EOF\n{curl_body}\nEOF"
        ),
        "python": (
            "import base64\n\n"
            f"{_client(base_url)}"
            f'with open({json.dumps(name)}, "rb") as f:\n'
            "    image = base64.b64encode(f.read()).decode()\n"
            f'result = client.post(\n    "/ai/vision",\n    cast_to=object,\n    body={python_body},\n)\n'
            'print(result["content"])\n'
        ),
        "javascript": (
            '// `file` is a File, e.g. from an <input type="file">\n'
            "const bytes = new Uint8Array(await file.arrayBuffer());\n"
            'let binary = "";\n'
            "for (const b of bytes) binary += String.fromCharCode(b);\n"
            "const image = btoa(binary);\n"
            f'const response = await fetch("{base_url}/v1/ai/vision", {{\n'
            '  method: "POST",\n'
            f'  headers: {{ "Authorization": "Bearer {KEY}", "Content-Type": "application/json" }},\n'
            f"  body: JSON.stringify({js_body}),\n"
            "});\n"
            "console.log((await response.json()).content);"
        ),
    }


def video(base_url: str, body: dict[str, Any]) -> dict[str, str]:
    """A video job: generate, then poll its status until it is finished (plain httpx: the
    openai SDK has no call for Infrai's /v1/video routes)."""
    status = f"{base_url}/v1/video/status/"
    return {
        "curl": (
            f"{_curl(base_url, '/video/generate', body)}\n\n"
            "# The answer is the job; ask for its state until it is succeeded (or failed):\n"
            f'curl {status}$JOB_ID -H "Authorization: Bearer {KEY}"'
        ),
        "python": (
            "import time\n\nimport httpx\n\n"
            f'client = httpx.Client(base_url="{base_url}/v1", headers={{"Authorization": "Bearer {KEY}"}}, timeout=30)\n'
            f'job = client.post("/video/generate", json={_py(body)}).raise_for_status().json()\n'
            'while job["state"] in ("queued", "running"):\n'
            "    time.sleep(5)\n"
            "    job = client.get(f\"/video/status/{job['job_id']}\").raise_for_status().json()\n"
            'print(job["state"], job.get("video_url") or job.get("error"))\n'
        ),
        "javascript": _fetch(
            base_url,
            "/video/generate",
            body,
            "let job = await response.json();\n"
            'while (job.state === "queued" || job.state === "running") {\n'
            "  await new Promise((resolve) => setTimeout(resolve, 5000));\n"
            f"  const status = await fetch(`{status}${{job.job_id}}`, {{\n"
            f'    headers: {{ "Authorization": "Bearer {KEY}" }},\n'
            "  });\n"
            "  job = await status.json();\n"
            "}\n"
            "console.log(job.state, job.video_url || job.error);",
        ),
    }
