"""Password hashing with argon2 (DESIGN §9: passwords are stored hashed with argon2).

Everything that checks a password goes through `Passwords`, so the cost parameters live in one
place: tests use `Passwords(cheap=True)` (fast, still real argon2id hashes), production uses
argon2-cffi's defaults (RFC 9106 low-memory profile), and only the demo township's accounts are
hashed at the reduced DEMO_PARAMETERS (`Passwords.for_demo()`, see below).
"""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import Argon2Error, InvalidHashError

# The smallest parameters argon2 accepts: memory_cost must be at least 8 KiB per lane.
CHEAP_PARAMETERS = {"time_cost": 1, "memory_cost": 8, "parallelism": 1}

# REDUCED COST, FOR THE DEMO TOWNSHIP ONLY. Every person gets a hash of their own (salted apart),
# and the demo has ~705 accounts: at the default cost (64 MiB, 3 passes, ~0.1-0.3 s a hash) that
# would add minutes to `gridloop demo`. Their password is the published `gridloop-demo` anyway, so
# they are hashed with these parameters (~1 ms a hash) instead. Real imports (`gridloop org
# import`) use the application's Passwords, at the default cost. A demo hash still verifies under
# any parameters, and `needs_rehash` is true for it under the default ones, so the first successful
# login upgrades it (engine.org.authenticate).
DEMO_PARAMETERS = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}

# Hashes of a random password that was thrown away, one for each parameter set. Logging in as an unknown user
# verifies against one of them, so that answer costs as much time as a wrong password and the
# response time does not tell an attacker which usernames exist. They are constants (not computed
# at import) so importing this module costs nothing; `Passwords` checks that the parameters still
# match its own and computes a fresh dummy when they do not (e.g. after a library upgrade changed
# the defaults).
DUMMY_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$"
    "leXjQf5NlFGHW4U5FaQP3A$VphYShpLs196iMQhLgDupGj+sC01keWG8BXhYdXXEno"
)
CHEAP_DUMMY_HASH = (
    "$argon2id$v=19$m=8,t=1,p=1$tGIFgxC+mOtBgsNK0Ph04g$sdrPKr3gQqqCDg1iFShXrJ9zZ8Ws2Ke3trg0nE+tFzg"
)


class Passwords:
    """Hash and verify passwords; never raises on bad input, so login code stays a plain `if`."""

    def __init__(self, cheap: bool = False, demo: bool = False) -> None:
        """`cheap`: the test parameters. `demo`: the reduced DEMO_PARAMETERS, only for hashing
        the demo township's accounts (use `for_demo()`). Neither: argon2-cffi's defaults."""
        self.cheap = cheap
        self.demo = demo and not cheap
        if cheap:
            self._hasher = PasswordHasher(**CHEAP_PARAMETERS)
        elif demo:
            self._hasher = PasswordHasher(**DEMO_PARAMETERS)
        else:
            self._hasher = PasswordHasher()
        self._dummy: str | None = None

    def for_demo(self) -> Passwords:
        """The hasher for the demo township's accounts: DEMO_PARAMETERS (reduced cost, see
        there), or this one when it is already cheaper (tests)."""
        return self if self.cheap or self.demo else Passwords(demo=True)

    def hash(self, pw: str) -> str:
        """A new salted argon2id hash of `pw`."""
        return self._hasher.hash(pw)

    def verify(self, hash: str, pw: str) -> bool:
        """True when `pw` matches `hash`; False on a mismatch, a malformed hash or non-text input."""
        if not isinstance(hash, str) or not isinstance(pw, str):
            return False
        try:
            return self._hasher.verify(hash, pw)
        except (Argon2Error, InvalidHashError, ValueError, TypeError):
            return False

    def needs_rehash(self, hash: str) -> bool:
        """True when `hash` was made with other parameters than ours (or is not a valid hash), so
        a successful login can upgrade it, e.g. demo accounts hashed cheaply."""
        if not isinstance(hash, str):
            return True
        try:
            return self._hasher.check_needs_rehash(hash)
        except (Argon2Error, InvalidHashError, ValueError, TypeError):
            return True

    def verify_dummy(self, pw: str) -> bool:
        """Spend one verification on a hash no password matches (unknown user); always False."""
        self.verify(self._dummy_hash(), pw if isinstance(pw, str) else "")
        return False

    def _dummy_hash(self) -> str:
        if self._dummy is None:
            constant = CHEAP_DUMMY_HASH if self.cheap else DUMMY_HASH
            self._dummy = (
                constant
                if not self.needs_rehash(constant)
                else self.hash(secrets.token_urlsafe(32))
            )
        return self._dummy
