"""Tables of GPU accounting (issue 14): allocation intervals and the daily rollups the reports read.

An **interval** is one pod holding ``count`` units of one device resource from ``start`` to
``end`` (None while it holds them). ``gpu_equivalent`` is the physical-GPU share of one unit (1 for
a whole GPU, 1/replicas for a time-sliced replica, a MIG instance's fraction), so GPU-seconds are
``count × gpu_equivalent × (end - start)``. Who and what it was (user, the user's groups when it
opened, workload kind and name, node, accelerator) is frozen into the row: later renames and
group changes do not rewrite history.

The **daily rollups** (per user, per group) are added to when an interval closes, split at UTC
midnights, in the same transaction as the close. Reports over 90 days then read at most
90 × users × accelerators × kinds small rows instead of every interval; intervals still open are
few (the pods holding GPUs now) and are added per request. The per-user rollups are also kept
per calendar month (:class:`GpuUsageMonthly`, same transaction): a 90-day report by user reads the
whole months there and only the days of the partial months at its edges from the daily table
(1,000 users: ~33,000 rows instead of ~242,000; ``benchmarks/usage_report.py``).

Lives in its own module (next to :mod:`.models`, on the same metadata) so the accounting tables
migrate on their own (``0003_gpu_usage``).
"""

from datetime import date, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base


class GpuInterval(Base):
    """One pod holding devices of one resource, from start to end."""

    __tablename__ = "crater_gpu_intervals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pod_uid: Mapped[str] = mapped_column(String(64))
    namespace: Mapped[str] = mapped_column(String(253))
    pod_name: Mapped[str] = mapped_column(String(253))
    user: Mapped[str | None] = mapped_column(String(255))
    #: the user's hub groups when the interval opened
    groups: Mapped[list] = mapped_column(JSON, default=list)
    accelerator: Mapped[str] = mapped_column(String(64))
    resource: Mapped[str] = mapped_column(String(253))
    count: Mapped[int] = mapped_column(Integer)
    gpu_equivalent: Mapped[float] = mapped_column(Float, default=1.0)
    kind: Mapped[str] = mapped_column(String(16))
    workload: Mapped[str] = mapped_column(String(255))
    link: Mapped[str | None] = mapped_column(String(1024))
    node: Mapped[str | None] = mapped_column(String(253))
    start: Mapped[datetime] = mapped_column(DateTime)
    end: Mapped[datetime | None] = mapped_column(DateTime)
    #: the end is a guess (the pod vanished while the hub was down, without a trace of when)
    end_estimated: Mapped[bool] = mapped_column(Boolean, default=False)
    #: mean utilization 0..1 over the interval, from Prometheus at close; None when unknown
    utilization: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        UniqueConstraint("pod_uid", "resource", name="uq_crater_gpu_intervals_pod_resource"),
        Index("ix_crater_gpu_intervals_open", "end"),
        Index("ix_crater_gpu_intervals_user_start", "user", "start"),
    )

    @property
    def gpus(self):
        """Physical GPUs held: units × each unit's share."""
        return self.count * self.gpu_equivalent


class GpuUsageDaily(Base):
    """GPU-seconds of closed intervals per UTC day, user, accelerator and workload kind."""

    __tablename__ = "crater_gpu_usage_daily"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    user: Mapped[str] = mapped_column(String(255), primary_key=True)
    accelerator: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    #: GPU-seconds of intervals whose utilization is known, and those weighted by it (mean =
    #: busy / measured)
    measured_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    busy_seconds: Mapped[float] = mapped_column(Float, default=0.0)

    __table_args__ = (Index("ix_crater_gpu_usage_daily_user_day", "user", "day"),
                      {"sqlite_with_rowid": False})


class GpuUsageMonthly(Base):
    """The per-user rollup per calendar month (``month``: its first day): what the report by user
    reads for the whole months of its range, so its cost grows with months, not days."""

    __tablename__ = "crater_gpu_usage_monthly"

    month: Mapped[date] = mapped_column(Date, primary_key=True)
    user: Mapped[str] = mapped_column(String(255), primary_key=True)
    accelerator: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    measured_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    busy_seconds: Mapped[float] = mapped_column(Float, default=0.0)

    __table_args__ = {"sqlite_with_rowid": False}


class GpuUsageDailyGroup(Base):
    """The same per group (an interval counts for every group its user was in when it opened)."""

    __tablename__ = "crater_gpu_usage_daily_group"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    group: Mapped[str] = mapped_column(String(255), primary_key=True)
    accelerator: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    measured_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    busy_seconds: Mapped[float] = mapped_column(Float, default=0.0)

    __table_args__ = {"sqlite_with_rowid": False}


class GpuUsageDailyTotal(Base):
    """GPU-seconds per UTC day, accelerator and kind over everyone: the report's plot, a few
    rows per day (summing the per-user table for it would read every user's rows again)."""

    __tablename__ = "crater_gpu_usage_daily_total"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    accelerator: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    measured_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    busy_seconds: Mapped[float] = mapped_column(Float, default=0.0)

    __table_args__ = {"sqlite_with_rowid": False}
