"""Request and response bodies of the users API."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, EmailStr, StringConstraints

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Password = Annotated[str, StringConstraints(min_length=8, max_length=200)]


class Registration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailStr
    password: Password
    name: Name


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str
    password: str


class UserOut(BaseModel):
    id: int
    email: str
    name: str


class AccessToken(BaseModel):
    access_token: str
    token_type: str = "bearer"
