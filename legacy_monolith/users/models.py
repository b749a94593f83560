"""Tables owned by the users capability."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Integer, MetaData, String, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from strangler.db import NAMING_CONVENTION


class UsersBase(DeclarativeBase):
    """Declarative base of this capability alone: its own MetaData, so no table of another
    capability can even be referenced by a foreign key."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(UsersBase):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
