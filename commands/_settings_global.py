"""The ``:config:`` section: service-wide settings with vmpooler's code defaults."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import msgspec

from commands._settings_keys import YamlShape

__all__ = ["GlobalSettings", "HealthThresholds"]

NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Positive = Annotated[int, msgspec.Meta(ge=1)]


class HealthThresholds(msgspec.Struct, frozen=True, kw_only=True):
    """``:config: health_thresholds``; keys given in the YAML replace these defaults one by one.

    Attributes:
        pending_queue_max: pending VMs per pool above which health is degraded (unhealthy at twice).
        ready_queue_max: ready VMs per pool above which health is degraded (unhealthy at twice).
        dlq_max_warning: dead letters above which health is degraded.
        dlq_max_critical: dead letters above which health is unhealthy.
        stuck_vm_age_threshold: seconds after which a pending VM counts as stuck.
        stuck_vm_max_warning: stuck VMs above which health is degraded.
        stuck_vm_max_critical: stuck VMs above which health is unhealthy.
    """

    pending_queue_max: NonNegative = 100
    ready_queue_max: NonNegative = 500
    dlq_max_warning: NonNegative = 100
    dlq_max_critical: NonNegative = 1000
    stuck_vm_age_threshold: NonNegative = 7200
    stuck_vm_max_warning: NonNegative = 10
    stuck_vm_max_critical: NonNegative = 50


class GlobalSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The ``:config:`` section. Minutes, hours and seconds are as in vmpooler, named per field.

    Attributes:
        site_name: dashboard title.
        logfile: a file the process also logs to (appended); empty: stderr only. vmpooler's default,
            ``/var/log/vmpooler.log``, is not ours: a service logs to stderr unless asked.
        prefix: hostname prefix of new VMs (include the separator, e.g. ``ci-``).
        task_limit: clones in flight at once, across all pools.
        ondemand_clone_limit: on-demand clones in flight at once.
        max_ondemand_instances_per_request: VMs of one pool one on-demand request may ask for.
        ondemand_request_ttl: minutes an on-demand request may take to be fulfilled.
        max_vm_retries: clone attempts per on-demand VM.
        timeout: minutes a VM may stay pending (default for pools that do not set it).
        timeout_notification: minutes before the pending timeout at which a warning is logged.
        vm_checktime: minutes between health checks of one ready VM.
        vm_lifetime: hours a checked-out VM lives unless its lifetime is changed.
        vm_lifetime_auth: hours for VMs checked out with a token; ``None`` uses ``vm_lifetime``.
        max_lifetime_upper_limit: hours a lifetime may be set to (exclusive); ``None`` for no limit.
        ready_ttl: minutes a ready VM may wait unused before it is recycled (default for pools).
        allowed_tags: tag names a client may set; ``None`` allows any.
        experimental_features: enables the run-time pool size/template/clone-target/reset endpoints.
        usage_stats: emit per-user and per-job usage metrics.
        request_logger: log every API request.
        rate_limiting_enabled: apply ``:rate_limits:``.
        backend_weight: ``clone_target -> weight`` for choosing among pools that share an alias.
        clone_target: default cluster or placement target for pools that set none.
        migration_limit: migrations at once at checkout (vSphere); ``None`` disables migration.
        extra_config: extra YAML files that were merged into this configuration.
        purge_unconfigured_resources: at startup, delete provider resources that belong to no pool.
        resources_allowlist: resources never purged.
        check_loop_delay_min: pool loop's shortest sleep in seconds.
        check_loop_delay_max: pool loop's longest sleep in seconds.
        check_loop_delay_decay: factor the pool loop's sleep grows by while nothing changes.
        check_ready_vm_hostname_for_mismatch: destroy ready VMs whose guest hostname differs (default for
            pools).
        create_folders: let the provider create missing folders (vSphere).
        create_template_delta_disks: prepare templates for linked clones at startup (vSphere).
        create_linked_clones: clone as linked clones (vSphere).
        max_tries: attempts of a provider connection.
        retry_factor: seconds multiplied by the attempt number between provider connection attempts.
        manage_host_selection: let the provider choose the least used host (vSphere).
        host_selection_max_age: seconds a host-selection result stays valid.
        utilization_limit: percent of host CPU/memory above which a host is skipped.
        circuit_breaker_enabled: guard provider calls with a circuit breaker.
        circuit_breaker_failure_threshold: consecutive failures that open the breaker.
        circuit_breaker_timeout: seconds an open breaker waits before letting a trial call through.
        circuit_breaker_half_open_attempts: successes in half-open state that close the breaker.
        adaptive_timeout_enabled: adapt provider call timeouts to observed durations.
        connection_pool_timeout_min: adaptive timeout's lower bound in seconds.
        connection_pool_timeout_max: adaptive timeout's upper bound in seconds.
        connection_pool_timeout_initial: adaptive timeout's starting value in seconds.
        connection_pool_monitor_enabled: report provider connection-pool gauges.
        connection_pool_monitor_interval: seconds between connection-pool reports.
        dlq_enabled: record failures (clone, pending timeout, ready check) in the dead-letter log.
        dlq_ttl: hours dead letters are kept.
        dlq_max_entries: dead letters kept per queue.
        purge_enabled: periodically purge stale pending/ready/completed VMs and orphaned metadata.
        purge_interval: seconds between purges.
        purge_dry_run: only report what a purge would remove.
        max_pending_age: seconds after which a pending VM is purged.
        max_ready_age: seconds after which a ready VM is purged.
        max_completed_age: seconds after which a completed VM is purged.
        max_orphaned_age: seconds after which orphaned VM metadata is purged.
        health_check_enabled: periodically compute queue health.
        health_check_interval: seconds between health checks.
        health_thresholds: limits the health check compares against.
        max_deliveries: deliveries of one work item before it goes to the dead-letter stream.
        reclaim_idle_seconds: seconds a delivered work item may stay unacknowledged before another
            worker reclaims it.
        history_minute_hours: hours of per-minute dashboard history kept (by event time).
        history_hour_days: days of per-hour dashboard history kept (by event time).
        dashboard_max_streams: live dashboard streams (``/dashboard/events``) one API process serves
            at once; beyond it 503 with ``Retry-After``. Not a vmpooler key.
        http_header_timeout: seconds a client has to send a request's line and headers, from the
            connection's start or the previous response; then the connection is closed. Not a
            vmpooler key.
        http_body_timeout: seconds a request body may pause between two chunks; then the connection is
            closed. Not a vmpooler key.
        http_max_connections: open HTTP connections one API process serves at once (uvicorn's
            ``limit_concurrency``); beyond it 503. Not a vmpooler key.
        debug: development mode (env ``VMPOOLER_DEBUG``): logs to stdout and allows ``dummy`` auth.
        extra: keys of ``:config:`` this version does not know, as given (for providers and plugins).
    """

    YAML: ClassVar[YamlShape] = YamlShape(
        rest="extra",
        renamed={
            "purge_unconfigured_folders": "purge_unconfigured_resources",
            "folder_whitelist": "resources_allowlist",
        },
        removed={
            "domain": "removed in vmpooler 3; define a domain under :dns_configs: and name it in each "
            "pool's dns_plugin"
        },
    )

    site_name: str = "vmpooler"
    logfile: str = ""
    prefix: str = ""
    task_limit: NonNegative = 10
    ondemand_clone_limit: NonNegative = 10
    max_ondemand_instances_per_request: Positive = 10
    ondemand_request_ttl: NonNegative = 5
    max_vm_retries: NonNegative = 3
    timeout: NonNegative = 15
    timeout_notification: NonNegative = 5
    vm_checktime: NonNegative = 1
    vm_lifetime: NonNegative = 24
    vm_lifetime_auth: NonNegative | None = None
    max_lifetime_upper_limit: NonNegative | None = None
    ready_ttl: NonNegative = 60
    allowed_tags: tuple[str, ...] | None = None
    experimental_features: bool = False
    usage_stats: bool = False
    request_logger: bool = False
    rate_limiting_enabled: bool = False
    dashboard_max_streams: Positive = 200
    http_header_timeout: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    http_body_timeout: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    http_max_connections: Positive = 1000
    backend_weight: dict[str, NonNegative] = msgspec.field(default_factory=dict)
    clone_target: str = ""
    migration_limit: NonNegative | None = None
    extra_config: tuple[str, ...] = ()
    purge_unconfigured_resources: bool = False
    resources_allowlist: tuple[str, ...] = ()
    check_loop_delay_min: NonNegative = 5
    check_loop_delay_max: NonNegative = 60
    check_loop_delay_decay: Annotated[float, msgspec.Meta(gt=0)] = 2.0
    check_ready_vm_hostname_for_mismatch: bool = True
    create_folders: bool = False
    create_template_delta_disks: bool = False
    create_linked_clones: bool = True
    max_tries: Positive = 3
    retry_factor: NonNegative = 10
    manage_host_selection: bool = False
    host_selection_max_age: NonNegative = 60
    utilization_limit: Annotated[int, msgspec.Meta(ge=0, le=100)] = 90
    circuit_breaker_enabled: bool = True
    circuit_breaker_failure_threshold: Positive = 5
    circuit_breaker_timeout: NonNegative = 30
    circuit_breaker_half_open_attempts: Positive = 3
    adaptive_timeout_enabled: bool = True
    connection_pool_timeout_min: NonNegative = 5
    connection_pool_timeout_max: NonNegative = 60
    connection_pool_timeout_initial: NonNegative = 30
    connection_pool_monitor_enabled: bool = True
    connection_pool_monitor_interval: Positive = 10
    dlq_enabled: bool = False
    dlq_ttl: NonNegative = 168
    dlq_max_entries: NonNegative = 10_000
    purge_enabled: bool = False
    purge_interval: Positive = 3600
    purge_dry_run: bool = False
    max_pending_age: NonNegative = 7200
    max_ready_age: NonNegative = 86_400
    max_completed_age: NonNegative = 3600
    max_orphaned_age: NonNegative = 86_400
    health_check_enabled: bool = False
    health_check_interval: Positive = 300
    health_thresholds: HealthThresholds = HealthThresholds()
    max_deliveries: Positive = 5
    reclaim_idle_seconds: Positive = 60
    history_minute_hours: Positive = 25
    history_hour_days: Positive = 30
    debug: bool = False
    extra: dict[str, Any] = msgspec.field(default_factory=dict)
