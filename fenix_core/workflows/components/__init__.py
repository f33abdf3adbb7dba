"""Parts of a workflow on the contract that the built-in workflows share. They
keep no state of their own: what they need to remember is a flag or two of
the caller's :class:`~fenix_core.contract.ComponentState` (constant size),
timers, or the host and instance records.

``dialogue``
    the reply-deadline timers (one per project).
``ending``
    winding a failed or cancelled session down.
``escalation``
    stuck work and ``controls.escalation``.
``lifecycle``
    hosts that leave the cloud: who is no longer awaited, where their
    instances went.

Where the behaviours the built-in workflows share live, and the tests that
hold them (driven on ``tests/contract_driver.py``; those reading only the
views run under the engine's ``StepContext`` too,
``tests/test_rolling_v2_step_context.py``). The constrained workflow
(the ``workflows/constrained`` package) builds on the rolling one and these components
(``tests/test_constrained_v2*.py``). Not here: what the engine does around
a workflow (the step runner, the reply intake, inventory, delivery).

1. Reply deadlines: a question's deadline is ``request.reply_window``
   after it was asked (timer ``reply_deadline:<project>``, moved when the
   project is asked again, cancelled by its answer); a project silent by
   then makes ``reply_policy`` "fail" fail the session ("project P did not
   answer S by <deadline>") or "default" act for it (``DEFAULT_<S>``, the
   default action per instance), through ``SessionContext.stop_awaiting``.
   ``base.WorkflowBase``; ``test_rolling_v2_replies.py``.
2. Pause: no host and no new move starts while the pipeline says
   wait; moves in flight end, a host in maintenance finishes.
   ``rolling._pump_moves``; ``test_rolling_v2_controls.py``.
3. Ending on failure (and the workflow's part of a cancel): no project
   awaited, no deadline or retry timer, asked/chosen instances PENDING, a
   drained host PENDING, a host in maintenance FAILED, moves under way
   followed to their end; the host this session disabled is enabled again
   unless ``host_up`` failed on it (FAILED, "left disabled") or it was
   skipped, retired or removed. ``components/ending.py``,
   ``rolling._after``; ``test_rolling_v2_failures.py``,
   ``test_rolling_v2_controls.py``.
4. Retry (``on_retry``): FAILED hosts and instances PENDING, the
   workflow's state reset (``pre``/``post`` actions that ran not run
   again), start over. ``test_rolling_v2_failures.py``.
5. Stuck work (``OpResult.timed_out``)
   escalated per kind with ``controls.escalation``: ``fail`` fails naming
   it, ``skip_host`` skips the host it was on; no policy: the workflow's own
   handling. ``wait_and_notify`` is the engine's (it must renew the
   operation instead of ending it; the contract has no "reopen").
   ``components/escalation.py``; ``test_rolling_v2_escalation.py``.
6. Skip host (escalation or the admin): asked/chosen instances of it
   PENDING, its retry timer cancelled, its drain or maintenance dropped,
   never enabled again, later results of its operations ignored.
   ``rolling._host_skipped``; ``test_rolling_v2_escalation.py``.
7. Reply metadata and allowed actions: questions carry the request's
   metadata, a retired host's drain questions ``"host_returns": false``;
   drain questions list the cloud driver's actions and the default action is
   one of them (needed ``SessionInfo.allowed_actions``).
   ``test_rolling_v2_replies.py``, ``test_rolling_v2_decommission.py``.
8. Decommission: a retiring host is never a target, is drained,
   gets its actions, ends DECOMMISSIONED and disabled;
   ``DecommissionWorkflow``. The capacity shortfall is checked again before
   the first decision, once add_hosts came in (``planner.capacity_shortfall``,
   the session factory's check at creation counted them in service).
   ``workflows/decommission.py``; ``test_rolling_v2_decommission.py``,
   ``test_lifecycle.py``.
9. Lifecycle: a host REMOVED while drained, maintained or mid-move
   ends its work without failing the session; projects asked only about
   instances no longer waiting are not awaited; the removed host's
   instances are located and become GONE or follow where they are
   (``components/lifecycle.py``); the hosts are listed before the first
   decision and add_hosts (ADDING) are enabled, ADDED and inventoried
   first, or the session fails if they never appear; an ADDED host is a
   target where instances stay; a compute host is listed before it goes
   into maintenance (an instance that arrived sends it back to draining).
   ``test_rolling_v2_lifecycle.py``, ``test_rolling_v2_failures.py``.
10. Placement rules that leave no target are named (affinity group
   for the project's manager; hard rules filling every host with room).
   Read from ``CapacityView.limits``. ``test_rolling_v2_rules.py``.
11. maintenance_at waiting follows a reschedule of the request.
   ``test_rolling_v2_controls.py``.
12. The rolling workflow's own: the Fenix sequence
   per project, OWN_ACTION watched / MIGRATE / LIVE_MIGRATE / EVICT as
   moves, refused targets with back-off retry, SCALE_IN after listing the
   hosts again, windows/pacing/gates through ``ctx.admit``.
13. The engine's, not a workflow's, on the contract: ``reply_at`` /
   ``actions_at`` in the notification bodies and refusing late replies
   (reply intake), progress percent and the ADMIN ``maintenance_session``
   notices, cancel itself and ``can_reschedule`` (``core/admin.py``: the
   cancelled session's ``advance`` winds the workflow down), applying
   inventories, listings and ``Locate`` results to the records, HOST_ADDED /
   HOST_REMOVED, abandoning a Watch / listing of a session that ended (done
   for a cancel in ``core/admin.py``; not yet for a failure), the ``stuck``
   list of the session view, merging the cloud's constraints.
"""
