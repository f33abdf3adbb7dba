"""The constrained workflow on the contract: ETSI constraints, several hosts
at once.

::

    MAINTENANCE ──► (all answered, maintenance_at, ``pre`` actions, hosts listed) ──► check
    check: a group whose per-host limit cannot hold with one host out, or no
           host that can be emptied ──► SCALE_IN (its project has a manager)
                                        or MAINTENANCE_FAILED naming the group
    controllers first, one at a time (the rolling workflow's drain and loop)
    PLANNED_MAINTENANCE: waves, overlapping:
        open hosts ── disabled first, then PLANNED_MAINTENANCE to each affected
                      project (per wave; one instance per question where
                      instance constraints exist; a lead_time holds its move)
        move members as their groups allow (max_impacted_members at once,
                      recovery_time after each move, anti-affinity and
                      max_instances_per_host on targets, capacity counting
                      arrivals in flight), INSTANCE_ACTION_DONE per instance,
                      ADMIN_ACTION_DONE per project and wave
        each emptied host runs its own stages while others drain
    MAINTENANCE_COMPLETE: ``post`` actions, MAINTENANCE_COMPLETE to every
           project ──► MAINTENANCE_DONE

The package, one concern a module (issue 18 item 2). Work per step follows
what changed (issue 18 item 6): each module's docstring says how, for what
it does.

- :mod:`.workflow`: :class:`ConstrainedWorkflow`, its hooks, the
  feasibility check and scale-in, the waves and the hosts' stages, the
  answers and the moves' ends;
- :mod:`.questions`: what each project is asked about, and in which wave;
- :mod:`.opening`: the opening decision (which pending hosts drain);
- :mod:`.placement`: the placement of one pass (which moves start, where);
- :mod:`.targeting`: the window of targets offered to the planner;
- :mod:`.reads`: what one decision reads more than once (``_Step``), the
  recoveries and the groups' weights;
- :mod:`.budgets`: the groups' budgets and the instances in recovery_time;
- :mod:`.caches`, :mod:`.draining`, :mod:`.walks`: the caches of this
  process kept with the per-group counts;
- :mod:`.state`: :class:`ConstrainedState`, the stage flags, the constants
  and small helpers; :mod:`.windows`: the sizes of the windows and dry runs.

The modules are internal: the names one of them uses from another keep
their leading underscore (private to the package, not to the module). A
lower module never imports a higher one (tests/test_layers.py); what the
lower modules call back on the workflow is :class:`.state.Waves`. A name
tests patch is read through its defining module (``windows.TARGET_WINDOW``,
``placement._pump``) wherever another module uses it.
"""

from __future__ import annotations

from ...constraints import COLD_MIGRATION_INTERRUPTION

# The stage flags tests read, exported as they were by the module this package was.
from .state import BUSY as BUSY
from .state import FIRST_DRAINED as FIRST_DRAINED
from .state import WE_DISABLED as WE_DISABLED
from .state import ConstrainedState
from .windows import CANDIDATE_WINDOW, DRY_RUN_HOSTS, TARGET_WINDOW
from .workflow import ConstrainedWorkflow

__all__ = [
    "CANDIDATE_WINDOW",
    "COLD_MIGRATION_INTERRUPTION",
    "DRY_RUN_HOSTS",
    "TARGET_WINDOW",
    "ConstrainedState",
    "ConstrainedWorkflow",
]
