"""Request and response bodies of the users API."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, EmailStr

from strangler.fields import (
    NO_NUL_NOT_BLANK,
    Text,
    TextRule,
    refuse_nul,
    refuse_surrounding_space,
)

Name = Annotated[str, TextRule(min_length=1, max_length=200, pattern=NO_NUL_NOT_BLANK, trim=True)]
Password = Annotated[str, TextRule(min_length=8, max_length=200)]


class Registration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Annotated[EmailStr, refuse_surrounding_space, refuse_nul]
    password: Password
    name: Name


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Text
    password: Text


class UserOut(BaseModel):
    id: int
    email: str
    name: str


class AccessToken(BaseModel):
    access_token: str
    token_type: str = "bearer"
