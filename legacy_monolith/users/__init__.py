"""Users capability: accounts, passwords and access tokens.

Public interface (nothing else of this package may be imported from outside it):
- `router`: the `/users` HTTP routes;
- `metadata`: the tables this capability owns;
- `UserSummary`, `find_user`, `register`, `Registration`, `EmailTaken`: for other
  capabilities' adapters and for seeding.
"""

from legacy_monolith.users.api import router
from legacy_monolith.users.models import UsersBase
from legacy_monolith.users.schemas import Registration
from legacy_monolith.users.service import EmailTaken, UserSummary, find_user, register

metadata = UsersBase.metadata

__all__ = [
    "EmailTaken",
    "Registration",
    "UserSummary",
    "find_user",
    "metadata",
    "register",
    "router",
]
