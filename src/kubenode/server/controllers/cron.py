"""Cron schedules as the CronJob controller reads them (upstream uses robfig/cron's
standard parser): five fields minute hour day-of-month month day-of-week with `*`,
`a-b`, `/step`, lists, month and weekday names, 7 = Sunday, the @yearly/@annually,
@monthly, @weekly, @daily/@midnight and @hourly macros, and a leading
"CRON_TZ=<zone>"/"TZ=<zone>". When both day fields are restricted a day matches
either (as cron does)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]


class CronError(ValueError):
    """An unparseable schedule (the CronJob controller reports it as an event)."""


def _field(text: str, lo: int, hi: int, names: list[str] | None = None) -> tuple[set[int], bool]:
    """The values of one field and whether it was a bare `*`."""
    out: set[int] = set()
    for part in text.split(","):
        rng, _, step_s = part.partition("/")
        step = int(step_s) if step_s else 1
        if step <= 0:
            raise CronError(f"invalid step in {part!r}")
        if rng in ("*", "?"):
            a, b = lo, hi
        else:
            first, _, last = rng.partition("-")
            a = _value(first, lo, names)
            b = _value(last, lo, names) if last else (hi if step_s else a)
        if not (lo <= a <= hi and lo <= b <= hi) or a > b:
            raise CronError(f"value out of range in {part!r} ({lo}-{hi})")
        out.update(range(a, b + 1, step))
    return out, text in ("*", "?")


def _value(text: str, lo: int, names: list[str] | None) -> int:
    if names and text.upper() in names:
        return names.index(text.upper()) + lo
    try:
        return int(text)
    except ValueError:
        raise CronError(f"failed to parse int from {text!r}") from None


@dataclass(frozen=True)
class Schedule:
    minutes: frozenset[int]
    hours: frozenset[int]
    dom: frozenset[int]
    months: frozenset[int]
    dow: frozenset[int]
    dom_any: bool
    dow_any: bool
    tz: dt.tzinfo

    def day_matches(self, d: dt.datetime) -> bool:
        dom = d.day in self.dom
        dow = (d.isoweekday() % 7) in self.dow
        if self.dom_any or self.dow_any:
            return dom and dow
        return dom or dow

    def next_after(self, t: dt.datetime) -> dt.datetime:
        """The first scheduled instant strictly after t (t is timezone-aware)."""
        cur = t.astimezone(self.tz).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        limit = cur + dt.timedelta(days=366 * 5)
        while cur < limit:
            if cur.month not in self.months:
                cur = (cur.replace(day=1, hour=0, minute=0) + dt.timedelta(days=32)).replace(day=1)
                continue
            if not self.day_matches(cur):
                cur = cur.replace(hour=0, minute=0) + dt.timedelta(days=1)
                continue
            if cur.hour not in self.hours:
                cur = cur.replace(minute=0) + dt.timedelta(hours=1)
                continue
            if cur.minute not in self.minutes:
                cur += dt.timedelta(minutes=1)
                continue
            return cur.astimezone(dt.UTC)
        raise CronError("schedule never fires")


def parse(spec: str, *, time_zone: str | None = None) -> Schedule:
    text = spec.strip()
    tz_name = time_zone
    if text.startswith(("CRON_TZ=", "TZ=")):
        head, _, text = text.partition(" ")
        tz_name = head.split("=", 1)[1]
        text = text.strip()
    try:
        tz: dt.tzinfo = ZoneInfo(tz_name) if tz_name else dt.UTC
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"unknown time zone {tz_name}") from None
    text = MACROS.get(text, text)
    fields = text.split()
    if len(fields) != 5:
        raise CronError(f"expected exactly 5 fields, found {len(fields)}: {spec!r}")
    minutes, _ = _field(fields[0], 0, 59)
    hours, _ = _field(fields[1], 0, 23)
    dom, dom_any = _field(fields[2], 1, 31)
    months, _ = _field(fields[3], 1, 12, MONTHS)
    dow, dow_any = _field(fields[4], 0, 7, DAYS)
    if 7 in dow:
        dow = (dow - {7}) | {0}
    return Schedule(
        frozenset(minutes),
        frozenset(hours),
        frozenset(dom),
        frozenset(months),
        frozenset(dow),
        dom_any,
        dow_any,
        tz,
    )
