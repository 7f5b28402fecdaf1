"""Cost arithmetic, checked against sums worked out by hand."""

from __future__ import annotations

from decimal import Decimal

from callassist.realtime.pricing import PriceTable, Usage

# A response.done `usage`, shaped as the openai SDK's RealtimeResponseUsage.
EXAMPLE = {
    "total_tokens": 1310,
    "input_tokens": 1200,
    "output_tokens": 110,
    "input_token_details": {
        "text_tokens": 700,
        "audio_tokens": 500,
        "image_tokens": 0,
        "cached_tokens": 1024,
        "cached_tokens_details": {"text_tokens": 640, "audio_tokens": 384, "image_tokens": 0},
    },
    "output_token_details": {"text_tokens": 22, "audio_tokens": 88},
}


def test_usage_flattens_the_api_shape() -> None:
    usage = Usage.from_api(EXAMPLE)
    assert usage == Usage(
        text_in=700, audio_in=500, cached_text=640, cached_audio=384, text_out=22, audio_out=88
    )
    assert usage.input_tokens == 1200 and usage.output_tokens == 110
    assert Usage.from_api({}) == Usage()
    assert Usage.from_api(None) == Usage()


def test_response_cost_gpt_realtime_2_1_by_hand() -> None:
    # uncached text 60 x $4 + cached text 640 x $0.40 + uncached audio 116 x $32 + cached audio 384 x $0.40
    # + text out 22 x $24 + audio out 88 x $64, all per 1M tokens:
    # 240 + 256 + 3712 + 153.6 + 528 + 5632 = 10521.6 -> $0.0105216
    cost = PriceTable().response_cost("gpt-realtime-2.1", Usage.from_api(EXAMPLE))
    assert cost == Decimal("0.0105216")


def test_response_cost_mini_and_snapshots_and_unknown_models() -> None:
    usage = Usage(text_in=1000, audio_in=2000, cached_text=0, cached_audio=1000, text_out=100, audio_out=1200)
    # 1000 x 0.60 + 1000 x 10 + 1000 x 0.30 + 100 x 2.40 + 1200 x 20 = 600 + 10000 + 300 + 240 + 24000
    assert PriceTable().response_cost("gpt-realtime-2.1-mini", usage) == Decimal("0.03514")
    # A dated snapshot costs what its family costs.
    assert PriceTable().response_cost("gpt-realtime-2.1-mini-2026-09-01", usage) == Decimal("0.03514")
    assert PriceTable().response_cost("some-future-model", usage) == 0


def test_transcription_cost_per_minute_and_overrides() -> None:
    prices = PriceTable()
    assert prices.transcription_cost("gpt-transcribe", 90) == Decimal("0.00675")  # 1.5 min x $0.0045
    custom = PriceTable.from_json(
        '{"gpt-realtime-2.1": {"audio_out": 60}, "gpt-transcribe": {"per_minute": 0.006}}'
    )
    assert custom.transcription_cost("gpt-transcribe", 60) == Decimal("0.006")
    assert custom.response_cost("gpt-realtime-2.1", Usage(audio_out=1_000_000)) == Decimal(60)
    assert custom.response_cost("gpt-realtime-2.1", Usage(text_out=1_000_000)) == Decimal(24)


def test_a_fifteen_minute_call_is_in_the_plans_ballpark() -> None:
    # 5 min of assistant speech (6000 audio tokens out), 5 min caller (3000 audio in), re-read context
    # mostly cached over ~30 responses: the plan's headline was about $1.50 on the old model.
    prices = PriceTable()
    out = prices.response_cost("gpt-realtime-2.1", Usage(audio_out=6000, text_out=1500))
    reread = prices.response_cost(
        "gpt-realtime-2.1",
        Usage(audio_in=3000 + 30 * 4000, cached_audio=30 * 3500, text_in=30 * 1500, cached_text=30 * 1400),
    )
    assert Decimal("0.30") < out + reread < Decimal("2.00")
