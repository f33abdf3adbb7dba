"""Parts of a workflow on the contract that every workflow shares, each with
its own typed, constant-size :class:`~fenix_core.contract.ComponentState`.

What today's workflows (``workflows/base.py``, ``controlled.py``,
``lifecycle.py``, ``rolling.py``, ``decommission.py``) do that the v2 rolling
workflow did not do when this port began (issue 18, P4), in order of user
impact. ``[todo]`` until ported; each item says where it lives once done and
which tests hold it. Not here: the constrained workflow (ported later), and
what the engine does around a workflow (the step runner, the reply intake,
inventory, delivery).

1. [todo] Reply deadlines. Every question has a deadline
   (``request.reply_window(state)`` after it was asked); a project silent by
   then is treated like a NACK: ``reply_policy`` "fail" fails the session
   ("project P did not answer S by <deadline>"), "default" acts for it
   (``DEFAULT_<S>``; a drain question: the default action per instance).
   A project asked again later has its own deadline.
2. [todo] Pause respected by the workflow: while paused no host starts and
   no new move starts (``StepContext.submit`` refuses a Move while paused);
   moves in flight end; a drained host does not go IN_MAINTENANCE.
3. [todo] Ending on failure: a failed session stops asking (deadlines
   cancelled, retry timers cancelled), asked/chosen instances go back to
   PENDING, a host being drained goes back to PENDING, a host in maintenance
   is FAILED; every host this session disabled is enabled again, except one
   that did not come back up (``host_up`` failed: left disabled, said in its
   reason) and a skipped one.
4. [todo] Retry of a failed session (``on_retry``): FAILED hosts and
   instances back to PENDING, move attempts and scale-in rounds reset, the
   workflow starts again; ``pre`` actions that ran are not run again.
5. [todo] Stuck work (an operation past its deadline, ``OpResult.timed_out``)
   escalated per kind with ``controls.escalation`` (migration, own_action,
   action, host_up): ``fail`` fails naming the stuck work, ``skip_host``
   skips the host it was on and goes on; no policy: the workflow's own
   handling (a move is retried, an action fails the session).
   ``wait_and_notify`` (keep following the operation with a new deadline and
   tell the admin) needs the engine to reopen the operation: not a workflow
   decision on the contract (see the report).
6. [todo] Skip host (escalation, or the admin): a skipped drain host gives
   its asked/chosen instances back to PENDING, its migration in flight is
   no longer followed by the workflow, its retry timer cancelled; the
   session goes on with the next host and never enables a skipped host.
7. [todo] Reply metadata and allowed actions: questions carry the request's
   ``metadata``; a drain question about a host that is retired carries
   ``"host_returns": false``; drain questions list the allowed actions.
8. [todo] Decommission (retiring hosts: ``decommission_hosts`` in any
   rolling session, ``DecommissionWorkflow`` for ``hosts``): a retiring host
   is never a target; it is drained like any host, gets its actions, is not
   waited for nor enabled, ends DECOMMISSIONED (finished work for pacing and
   progress); the session refuses to start when the hosts that stay cannot
   hold the instances (capacity shortfall, with anti-affinity).
9. [todo] Lifecycle mid-session: a host removed from the cloud (REMOVED)
   while it is drained or maintained ends that host's work and the session
   goes on; a move that ended from or to a removed host does not count as a
   failure; projects asked only about the removed host's instances stop
   being awaited. Hosts appearing (ADDED) are targets where instances stay
   (done before the port: ``STAYS``). add_hosts (ADDING hosts waited for,
   enabled, HOST_ADDED) and the listing before the first decision.
10. [todo] Affinity-stuck instances: an instance the cloud's affinity rule
   keeps with its group fails the session with a message telling the
   project to move the group itself (OWN_ACTION), not "no room".
11. Already in the v2 rolling workflow before the port: the Fenix sequence
   per project, OWN_ACTION watched / MIGRATE / LIVE_MIGRATE / EVICTION as
   moves, refused targets with back-off retry, SCALE_IN after listing the
   hosts again, maintenance_at waiting, windows/pacing/gates through
   ``ctx.admit``, placement rules through ``ctx.capacity.targets``.
12. The engine's, not a workflow's, on the contract: ``reply_at`` /
   ``actions_at`` in the notification bodies and refusing replies after the
   deadline (reply intake), progress percent and the ADMIN
   ``maintenance_session`` notices on each transition, cancel (the core's
   session controller), reschedule of ``maintenance_at``, applying
   inventories (new instances, moved ones), merging the cloud's constraints.
"""
