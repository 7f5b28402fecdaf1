"""Call records as JSON: the one shape both the dashboard API and `callassist ... --json` print.

Instants are ISO 8601 in the owner's zone with its offset, to the millisecond (barge-in timing is
read from them); money is a string with 6 decimals plus a float and the exact nano-dollars;
durations are seconds, latencies milliseconds.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from callassist.store.contacts import Contact
from callassist.store.records import (
    CallDetail,
    CallSummary,
    MessageRecord,
    NoticeRecord,
    ToolCallRecord,
    TranscriptEntry,
    UsageRecord,
    usd,
)
from callassist.store.voicemail import Voicemail

JSONObject = dict[str, Any]
MICRO_USD = Decimal("0.000001")


def instant(moment: datetime | None, zone: tzinfo) -> str | None:
    """'2026-11-24T10:15:03.250-05:00'."""
    if moment is None:
        return None
    return moment.astimezone(zone).isoformat(timespec="milliseconds")


def money(nanousd: int, prefix: str = "cost") -> JSONObject:
    """{cost_usd: '0.012346', cost_usd_float: 0.012345678, cost_nanousd: 12345678}."""
    dollars = usd(nanousd)
    return {
        f"{prefix}_usd": str(dollars.quantize(MICRO_USD, rounding=ROUND_HALF_UP)),
        f"{prefix}_usd_float": float(dollars),
        f"{prefix}_nanousd": nanousd,
    }


def call_summary_json(call: CallSummary, zone: tzinfo) -> JSONObject:
    return {
        "call_sid": call.call_sid,
        "caller_number": call.caller_number,
        "caller_name": call.caller_name,
        "started_at": instant(call.started_at, zone),
        "ended_at": instant(call.ended_at, zone),
        "duration_s": call.duration_s,
        "outcome": call.outcome,
        **money(call.cost_nanousd),
        "summary": call.summary,
        "urgency": call.urgency,
        "follow_up": call.follow_up,
        "message_count": call.message_count,
        "booking_count": call.booking_count,
    }


def calls_json(calls: list[CallSummary], zone: tzinfo, *, limit: int) -> JSONObject:
    """The list, and the `before` value that fetches the next page (null on the last page)."""
    # Full precision: a cursor cut to milliseconds could skip a call started in that millisecond.
    cursor = calls[-1].started_at.astimezone(zone).isoformat() if calls and len(calls) >= limit else None
    return {"calls": [call_summary_json(call, zone) for call in calls], "next_before": cursor}


def transcript_entry_json(entry: TranscriptEntry, zone: tzinfo) -> JSONObject:
    return {
        "role": entry.role,
        "text": entry.text,
        "at": instant(entry.spoken_at, zone),
        "interrupted": entry.interrupted,
        "heard_ms": entry.heard_ms,
        "audio_ms": entry.audio_ms,
        "latency_ms": entry.latency_ms,
    }


def tool_call_json(tool_call: ToolCallRecord, zone: tzinfo) -> JSONObject:
    return {
        "name": tool_call.name,
        "arguments": tool_call.arguments,
        "result": tool_call.result,
        "ok": tool_call.ok,
        "at": instant(tool_call.started_at, zone),
        "duration_ms": tool_call.duration_ms,
    }


def usage_json(usage: UsageRecord, zone: tzinfo) -> JSONObject:
    return {
        "kind": usage.kind,
        "ref": usage.ref,
        "purpose": usage.purpose,
        "status": usage.status,
        "model": usage.model,
        "text_in": usage.text_in,
        "audio_in": usage.audio_in,
        "cached_text": usage.cached_text,
        "cached_audio": usage.cached_audio,
        "text_out": usage.text_out,
        "audio_out": usage.audio_out,
        "seconds": usage.seconds,
        **money(usage.cost_nanousd),
        "at": instant(usage.created_at, zone),
    }


def message_json(message: MessageRecord, zone: tzinfo) -> JSONObject:
    return {
        "id": message.id,
        "call_sid": message.call_sid,
        "caller_number": message.caller_number,
        "caller_name": message.caller_name,
        "callback_number": message.callback_number,
        "message": message.message,
        "urgency": message.urgency,
        "created_at": instant(message.created_at, zone),
    }


def messages_json(messages: list[MessageRecord], zone: tzinfo) -> JSONObject:
    return {"messages": [message_json(message, zone) for message in messages]}


def notice_json(notice: NoticeRecord, zone: tzinfo) -> JSONObject:
    """A notice to the owner and where its delivery stands; never its body.

    `last_error` is the reason stored with the notice, as stored (for 'failed': why it was given
    up); `next_attempt_at` is set while it is pending, `sent_at` once it was delivered.
    """
    return {
        "id": notice.id,
        "call_sid": notice.call_sid,
        "channel": notice.channel,
        "recipient": notice.recipient,
        "subject": notice.subject,
        "status": notice.status,
        "attempts": notice.attempts,
        "last_error": notice.last_error,
        "created_at": instant(notice.created_at, zone),
        "next_attempt_at": instant(notice.next_attempt_at, zone),
        "sent_at": instant(notice.sent_at, zone),
    }


def notices_json(notices: list[NoticeRecord], zone: tzinfo) -> JSONObject:
    return {"notices": [notice_json(notice, zone) for notice in notices]}


def call_detail_json(detail: CallDetail, zone: tzinfo) -> JSONObject:
    latency = detail.latency
    return {
        **call_summary_json(detail.call, zone),
        "called_number": detail.called_number,
        "is_owner": detail.is_owner,
        "dial_status": detail.dial_status,
        "model": detail.model,
        "reason": detail.reason,
        "reconnects": detail.reconnects,
        "details": detail.details,
        "latency": {
            "greeting_ms": latency.greeting_ms,
            "turns_ms": latency.turns_ms,
            "average_ms": latency.average_ms,
            "p50_ms": latency.p50_ms,
            "max_ms": latency.max_ms,
        },
        "transcript": [transcript_entry_json(entry, zone) for entry in detail.transcript],
        "tool_calls": [tool_call_json(tool_call, zone) for tool_call in detail.tool_calls],
        "usage": [usage_json(usage, zone) for usage in detail.usage],
        "messages": [message_json(message, zone) for message in detail.messages],
        "notices": [notice_json(notice, zone) for notice in detail.notices],
        "voicemail": voicemail_json(detail.voicemail, zone) if detail.voicemail else None,
        "segments": [
            {
                "kind": segment.kind,
                "started_at": segment.started_at.astimezone(zone).isoformat(),
                "ended_at": segment.ended_at.astimezone(zone).isoformat() if segment.ended_at else None,
                "outcome": segment.outcome,
            }
            for segment in detail.segments
        ],
    }


def voicemail_json(voicemail: Voicemail, zone: tzinfo) -> JSONObject:
    return {
        "recording_sid": voicemail.recording_sid,
        "recording_url": voicemail.recording_url,
        "duration_s": voicemail.duration_s,
        "recording_status": voicemail.recording_status,
        "transcription_status": voicemail.transcription_status,
        "transcription": voicemail.transcription,
        "left_at": voicemail.created_at.astimezone(zone).isoformat(),
    }


def contact_json(contact: Contact, zone: tzinfo) -> JSONObject:
    return {
        "phone": contact.phone,
        "name": contact.name,
        "note": contact.note,
        "vip": contact.vip,
        "blocked": contact.blocked,
        "created_at": instant(contact.created_at, zone),
        "updated_at": instant(contact.updated_at, zone),
    }


def contacts_json(contacts: list[Contact], zone: tzinfo) -> JSONObject:
    return {"contacts": [contact_json(contact, zone) for contact in contacts]}
