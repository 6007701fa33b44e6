"""Tables of the news domain: the entries of each image's branch feeds, and which feeds
get an entry by themselves when their branch moves."""

from __future__ import annotations

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from changeover.control.db import Base


class NewsEntry(Base):
    """One entry of the feed of ``branch`` of an image. The branch is a name, not a key:
    a studio may announce a branch before it points anywhere."""

    __tablename__ = "news_entries"
    __table_args__ = (Index("ix_news_entries_feed", "image_id", "branch", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    branch: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text, default="")
    link: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(200))
    version_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """The version whose release posted it (automatic entries); None for an admin's."""


class NewsAuto(Base):
    """A feed that gets an entry ("1.2.0 released") each time its branch moves."""

    __tablename__ = "news_auto"
    __table_args__ = (UniqueConstraint("image_id", "branch", name="uq_news_auto_feed"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    branch: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[float] = mapped_column(Float)
    updated_by: Mapped[str] = mapped_column(String(200))
