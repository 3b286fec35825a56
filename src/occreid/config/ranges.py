"""Allowed ranges of numeric config values, declared on the type: `height: PositiveInt = 256`.

`typed.coerce` checks every `Annotated[..., Range(...)]` after converting the value, so a bad number is
a ConfigError naming the key, the value and the range instead of a ValueError deep in torch or numpy.
Method `Options` dataclasses can use the same aliases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

from occreid.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """A closed or open interval; None = unbounded on that side. Non-finite numbers are never inside."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self, integer: bool) -> str:
        """The range in words, e.g. 'an integer >= 1', 'a number in [0, 1]', 'a number > 0'."""
        kind = "an integer" if integer else "a finite number"
        low, high = self.low, self.high
        if integer and low is not None and self.low_open:  # integers: `> 0` reads better as `>= 1`
            low = math.floor(low) + 1
        low_open = self.low_open and not integer
        if low is not None and high is not None:
            return f"{kind} in {'(' if low_open else '['}{_num(low)}, {_num(high)}{')' if self.high_open else ']'}"
        if low is not None:
            return f"{kind} {'>' if low_open else '>='} {_num(low)}"
        if high is not None:
            return f"{kind} {'<' if self.high_open else '<='} {_num(high)}"
        return kind

    def check(self, value: float, key: str) -> None:
        """Raise ConfigError naming `key`, the value and this range when `value` lies outside it."""
        if not self.contains(value):
            integer = isinstance(value, int)
            raise ConfigError(f"{key}: {value!r} is out of range; expected {self.describe(integer)}")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


#: Sizes and counts that must be at least one (image height, batch sizes, k of a re-ranking).
PositiveInt = Annotated[int, Range(low=0, low_open=True)]
#: Counts where 0 means "none" or "off" (workers, padding, eval_every).
NonNegativeInt = Annotated[int, Range(low=0)]
#: Strictly positive amounts (a normalisation std, a clipping norm, a decay factor).
PositiveFloat = Annotated[float, Range(low=0, low_open=True)]
#: Rates and amounts where 0 is allowed (learning rate, weight decay, jitter strength).
NonNegativeFloat = Annotated[float, Range(low=0)]
#: Probabilities and fractions in [0, 1].
Probability = Annotated[float, Range(low=0, high=1)]
