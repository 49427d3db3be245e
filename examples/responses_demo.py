"""The OpenAI Responses API through kiro-gateway, with the official openai SDK.

    cargo run --release -- --demo            # in one terminal
    pip install openai && python examples/responses_demo.py

OPENAI_BASE_URL picks the gateway (default http://127.0.0.1:8000/v1); the key is
KIRO_GATEWAY_KEY or OPENAI_API_KEY (any value when the gateway has no PROXY_API_KEY).
With --demo the upstream is an offline mock that echoes the prompt, not a real model.
"""

import os

from openai import OpenAI

MODEL = "claude-sonnet-4-5"

client = OpenAI(
    base_url=os.environ.get("OPENAI_BASE_URL") or "http://127.0.0.1:8000/v1",
    api_key=os.environ.get("KIRO_GATEWAY_KEY") or os.environ.get("OPENAI_API_KEY") or "anything",
)

# One answer, in one piece.
r = client.responses.create(model=MODEL, instructions="Be brief.", input="Hello from the Responses API")
print(f"{r.id} ({r.status}, {r.usage.input_tokens} in / {r.usage.output_tokens} out):")
print(r.output_text)
print()

# The same, streamed: text deltas as they arrive, then the finished response.
with client.responses.stream(model=MODEL, input="And now streamed") as stream:
    for event in stream:
        if event.type == "response.output_text.delta":
            print(event.delta, end="", flush=True)
    final = stream.get_final_response()
print()
print(f"{final.id} ({final.status})")
