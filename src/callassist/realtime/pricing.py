"""What a call costs: the price table per model and the cost of each response from its `usage`.

Prices are USD per 1M tokens, from OpenAI's model pages (e.g.
https://developers.openai.com/api/docs/models/gpt-realtime-2.1-mini) and Realtime costs guide
(https://developers.openai.com/api/docs/guides/realtime-costs), overridable with CALLASSIST_PRICES.
Cached tokens are a subset of input tokens, billed at the cached rate instead of the full one. Input
transcription is billed separately, per minute of caller audio.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class Prices:
    """USD per 1M tokens."""

    text_in: Decimal
    text_cached: Decimal
    text_out: Decimal
    audio_in: Decimal
    audio_cached: Decimal
    audio_out: Decimal


def _prices(*values: str) -> Prices:
    return Prices(*(Decimal(value) for value in values))


FULL = _prices("4.00", "0.40", "16.00", "32.00", "0.40", "64.00")
FULL_V2 = _prices("4.00", "0.40", "24.00", "32.00", "0.40", "64.00")
MINI = _prices("0.60", "0.06", "2.40", "10.00", "0.30", "20.00")

# GPT-Live's Responses backend (text only; the audio columns never apply): the model pages via the
# pricing page, https://developers.openai.com/api/docs/pricing (gpt-5.4-mini $0.75 / $0.075 / $4.50).
GPT_5_4 = _prices("2.50", "0.25", "15.00", "2.50", "0.25", "15.00")
GPT_5_4_MINI = _prices("0.75", "0.075", "4.50", "0.75", "0.075", "4.50")
GPT_5_4_NANO = _prices("0.20", "0.02", "1.25", "0.20", "0.02", "1.25")

MODEL_PRICES: dict[str, Prices] = {
    "gpt-realtime": FULL,
    "gpt-realtime-2025-08-28": FULL,
    "gpt-realtime-1.5": FULL,
    "gpt-realtime-2": FULL_V2,
    "gpt-realtime-2.1": FULL_V2,
    "gpt-realtime-mini": MINI,
    "gpt-realtime-mini-2025-10-06": MINI,
    "gpt-realtime-mini-2025-12-15": MINI,
    "gpt-realtime-2.1-mini": MINI,
    "gpt-5.4": GPT_5_4,
    "gpt-5.4-mini": GPT_5_4_MINI,
    "gpt-5.4-nano": GPT_5_4_NANO,
}

# GPT-Live: USD per minute of session, billed per second, not rounded up; the backend's tokens are
# billed as usual (https://developers.openai.com/api/docs/models/gpt-live-1.1: active $0.05, standby
# $0.02 (WebRTC only, never on our WebSocket); the voice latency and cost guide).
LIVE_PER_MINUTE: dict[str, Decimal] = {
    "gpt-live-1": Decimal("0.05"),
    "gpt-live-1.1": Decimal("0.05"),
}

# USD per minute of transcribed caller audio.
TRANSCRIPTION_PER_MINUTE: dict[str, Decimal] = {
    "gpt-transcribe": Decimal("0.0045"),
    "gpt-live-transcribe": Decimal("0.017"),
    "gpt-realtime-whisper": Decimal("0.017"),
    "whisper-1": Decimal("0.006"),
    "gpt-4o-transcribe": Decimal("0.006"),
    "gpt-4o-mini-transcribe": Decimal("0.003"),
}


@dataclass(frozen=True)
class Usage:
    """Token counts of one response, flattened from the API's `usage` object."""

    text_in: int = 0
    audio_in: int = 0
    cached_text: int = 0
    cached_audio: int = 0
    text_out: int = 0
    audio_out: int = 0

    @property
    def input_tokens(self) -> int:
        return self.text_in + self.audio_in

    @property
    def output_tokens(self) -> int:
        return self.text_out + self.audio_out

    @classmethod
    def from_api(cls, usage: Any) -> Usage:
        """From an SDK `RealtimeResponseUsage` (or a dict of the same shape); missing parts count 0."""

        def get(node: Any, name: str) -> Any:
            if node is None:
                return None
            return node.get(name) if isinstance(node, dict) else getattr(node, name, None)

        inputs = get(usage, "input_token_details")
        cached = get(inputs, "cached_tokens_details")
        outputs = get(usage, "output_token_details")
        text_in = int(get(inputs, "text_tokens") or 0)
        audio_in = int(get(inputs, "audio_tokens") or 0)
        cached_text = int(get(cached, "text_tokens") or 0)
        cached_audio = int(get(cached, "audio_tokens") or 0)
        if cached is None and get(inputs, "cached_tokens"):
            # Only a total was given: attribute it to text first (the instructions are cached first).
            total_cached = int(get(inputs, "cached_tokens") or 0)
            cached_text = min(total_cached, text_in)
            cached_audio = min(total_cached - cached_text, audio_in)
        return cls(
            text_in=text_in,
            audio_in=audio_in,
            cached_text=min(cached_text, text_in),
            cached_audio=min(cached_audio, audio_in),
            text_out=int(get(outputs, "text_tokens") or 0),
            audio_out=int(get(outputs, "audio_tokens") or 0),
        )


class PriceTable:
    def __init__(self, overrides: dict[str, dict[str, float | str]] | None = None) -> None:
        self.models = dict(MODEL_PRICES)
        self.transcription = dict(TRANSCRIPTION_PER_MINUTE)
        self.live = dict(LIVE_PER_MINUTE)
        for model, fields in (overrides or {}).items():
            if "per_minute" in fields and model.startswith("gpt-live-"):
                self.live[model] = Decimal(str(fields["per_minute"]))
                continue
            if "per_minute" in fields:
                self.transcription[model] = Decimal(str(fields["per_minute"]))
                continue
            base = self.models.get(model, FULL_V2)
            self.models[model] = replace(base, **{key: Decimal(str(value)) for key, value in fields.items()})

    @classmethod
    def from_json(cls, text: str | None) -> PriceTable:
        """From CALLASSIST_PRICES, e.g.
        '{"gpt-realtime-2.1": {"audio_out": 60}, "gpt-transcribe": {"per_minute": 0.005}}'."""
        return cls(json.loads(text) if text else None)

    def prices_for(self, model: str) -> Prices | None:
        if model in self.models:
            return self.models[model]
        # Dated snapshots ("gpt-realtime-2.1-2026-05-01") cost what their family costs.
        family = max((name for name in self.models if model.startswith(name)), key=len, default=None)
        return self.models[family] if family else None

    def response_cost(self, model: str, usage: Usage) -> Decimal:
        prices = self.prices_for(model)
        if prices is None:
            return Decimal(0)
        total = (
            (usage.text_in - usage.cached_text) * prices.text_in
            + usage.cached_text * prices.text_cached
            + (usage.audio_in - usage.cached_audio) * prices.audio_in
            + usage.cached_audio * prices.audio_cached
            + usage.text_out * prices.text_out
            + usage.audio_out * prices.audio_out
        )
        return total / MILLION

    def transcription_cost(self, model: str, seconds: float) -> Decimal:
        per_minute = self.transcription.get(model)
        if per_minute is None:
            return Decimal(0)
        return per_minute * Decimal(str(seconds)) / Decimal(60)

    def live_cost(self, model: str, seconds: float) -> Decimal:
        """A GPT-Live session's cost for `seconds` of billable duration (per second, at the minute rate)."""
        per_minute = self.live.get(model)
        if per_minute is None:
            family = max((name for name in self.live if model.startswith(name)), key=len, default=None)
            per_minute = self.live[family] if family else None
        if per_minute is None:
            return Decimal(0)
        return per_minute * Decimal(str(seconds)) / Decimal(60)
