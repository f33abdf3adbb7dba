"""How much one decision of the waves reads: the sizes of its windows and
of the fleets its dry runs cover. Read through this module (``windows.TARGET_WINDOW``)
by every module that uses them: a test that makes them smaller reaches each use."""

#: Up to this many hosts left, each host opened is checked by a dry run to
#: leave an order in which the rest can still be emptied (it costs hosts x
#: instances per decision; larger sessions rely on the capacity check), and
#: so is each move that could cost a member of a per-host-limited (or
#: anti-affine) group its host
#: (:func:`~fenix_core.workflows.constrained.placement._keeps_draining`).
DRY_RUN_HOSTS = 200
#: Targets offered to the planner per kind of instance: the best this many
#: from ``ctx.capacity.targets`` (room, rules, most free first).
TARGET_WINDOW = 128
#: Pending hosts offered to the planner as hosts to open in one decision:
#: the best this many by the idle groups' work they hold.
CANDIDATE_WINDOW = 128
#: Hosts a kept walk (:class:`~fenix_core.workflows.constrained.walks._Walk`) holds beyond
#: a window's: walked anew once it holds no more than a window's (TARGET_WINDOW,
#: and the own host).
_WALK_SLACK = 64
