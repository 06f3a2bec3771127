"""SQLAlchemy 2 models of crater_hub's state that must survive restarts: jobs and their history,
users' datasets and their shares; library images and image commits.

Times are naive UTC, as JupyterHub's ORM stores them; :func:`isotime` renders them for the API.
"""

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow():
    """Naive UTC now (module level, so tests can move time)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def isotime(value):
    return None if value is None else value.isoformat(timespec="milliseconds") + "Z"


def from_isotime(text):
    """A Kubernetes or API timestamp (``2026-12-01T20:31:16Z``) as a naive UTC datetime, the way
    the tables keep times; None for None or anything unreadable."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(
            timezone.utc).replace(tzinfo=None)
    except (AttributeError, ValueError):
        return None


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Job(Base):
    """One batch job: the frozen spec it was submitted with, and where it stands."""

    __tablename__ = "crater_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(255))
    profile: Mapped[str] = mapped_column(String(255))
    accelerator: Mapped[str | None] = mapped_column(String(64))
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    cpu: Mapped[str | None] = mapped_column(String(32))
    cpu_limit: Mapped[str | None] = mapped_column(String(32))
    memory: Mapped[str | None] = mapped_column(String(32))
    memory_limit: Mapped[str | None] = mapped_column(String(32))
    image: Mapped[str] = mapped_column(String(1024))
    command: Mapped[list] = mapped_column(JSON)
    env: Mapped[dict] = mapped_column(JSON)
    priority: Mapped[str] = mapped_column(String(64))
    priority_value: Mapped[int] = mapped_column(Integer, default=0)
    best_effort: Mapped[bool] = mapped_column(Boolean, default=False)
    queue: Mapped[str] = mapped_column(String(64))
    max_runtime: Mapped[int] = mapped_column(Integer)
    #: the spec's Kubernetes details (node selector, tolerations, resource name): what dispatch needs
    shape: Mapped[dict] = mapped_column(JSON)

    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    #: requeues after preemption: each attempt has its own Kubernetes Job name
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    k8s_job: Mapped[str | None] = mapped_column(String(63))
    #: the Job of this attempt was created (seen in the API); a missing Job then is not re-created
    dispatched: Mapped[bool] = mapped_column(Boolean, default=False)
    #: the Kubernetes Job of a finished attempt has been deleted by the hub
    cleaned: Mapped[bool] = mapped_column(Boolean, default=False)
    node: Mapped[str | None] = mapped_column(String(253))
    log_tail: Mapped[str | None] = mapped_column(Text)

    submitted: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    admitted: Mapped[datetime | None] = mapped_column(DateTime)
    started: Mapped[datetime | None] = mapped_column(DateTime)
    finished: Mapped[datetime | None] = mapped_column(DateTime)

    transitions: Mapped[list["JobTransition"]] = relationship(
        back_populates="job", order_by="JobTransition.id", cascade="all, delete-orphan")

    __table_args__ = (
        Index("ix_crater_jobs_owner_id", "owner", "id"),
        Index("ix_crater_jobs_state", "state"),
    )


class JobTransition(Base):
    """A state a job entered, why, and when."""

    __tablename__ = "crater_job_transitions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("crater_jobs.id", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    job: Mapped[Job] = relationship(back_populates="transitions")


class Dataset(Base):
    """A user's (or a group's: owner ``@<group>``) dataset: a folder of the shared data volume
    (``space``/``path``), shared with users and groups (:class:`DatasetShare`). Catalog datasets live in configuration instead."""

    __tablename__ = "crater_datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(63))
    description: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[str] = mapped_column(String(16), default="dataset")
    #: ``users/<owner>``, ``groups/<group>`` or ``public``: the space of the data volume it lives in
    space: Mapped[str] = mapped_column(String(300))
    #: the folder in that space (its name, today)
    path: Mapped[str] = mapped_column(String(300))
    editable: Mapped[bool] = mapped_column(Boolean, default=False)
    size: Mapped[str | None] = mapped_column(String(32))
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    shares: Mapped[list["DatasetShare"]] = relationship(
        back_populates="dataset", order_by="DatasetShare.id", cascade="all, delete-orphan",
        lazy="selectin")

    __table_args__ = (UniqueConstraint("owner", "name", name="uq_crater_datasets_owner_name"),)


class DatasetShare(Base):
    """One grant of a dataset: to a user (``kind`` "user") or a group ("group") by name."""

    __tablename__ = "crater_dataset_shares"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("crater_datasets.id", ondelete="CASCADE"),
                                            index=True)
    kind: Mapped[str] = mapped_column(String(8))
    name: Mapped[str] = mapped_column(String(255))
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    dataset: Mapped[Dataset] = relationship(back_populates="shares")

    __table_args__ = (
        UniqueConstraint("dataset_id", "kind", "name", name="uq_crater_dataset_shares_grant"),
        Index("ix_crater_dataset_shares_kind_name", "kind", "name"),
    )


class Image(Base):
    """A library image: a commit's result or an import. Admin images come from config, not here."""

    __tablename__ = "crater_images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(255))
    tag: Mapped[str] = mapped_column(String(128))
    #: the full reference a pod or job names (``<registry>/<repository>:<tag>``)
    reference: Mapped[str] = mapped_column(String(1024))
    digest: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    description: Mapped[str] = mapped_column(Text, default="")
    #: "commit" or "import"
    source: Mapped[str] = mapped_column(String(16))
    #: commit: {"server": ..., "commit": id}; import: {"reference": what the user gave}
    source_detail: Mapped[dict] = mapped_column(JSON, default=dict)
    shared_users: Mapped[list] = mapped_column(JSON, default=list)
    shared_groups: Mapped[list] = mapped_column(JSON, default=list)
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    __table_args__ = (Index("ix_crater_images_owner", "owner"),)


class ImageCommit(Base):
    """One commit of a running server: pending → committing → pushing → succeeded | failed."""

    __tablename__ = "crater_image_commits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(255))
    #: who asked (an admin may commit another user's server)
    requester: Mapped[str] = mapped_column(String(255))
    server: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(255))
    tag: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    reference: Mapped[str] = mapped_column(String(1024))
    state: Mapped[str] = mapped_column(String(16))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    reason: Mapped[str | None] = mapped_column(String(32))
    message: Mapped[str | None] = mapped_column(Text)
    log: Mapped[str] = mapped_column(Text, default="")
    digest: Mapped[str | None] = mapped_column(String(100))
    size: Mapped[int | None] = mapped_column(BigInteger)
    image_id: Mapped[int | None] = mapped_column(Integer)
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished: Mapped[datetime | None] = mapped_column(DateTime)

    __table_args__ = (Index("ix_crater_image_commits_owner", "owner"),)
