"""The simulator and what only the front ends use of it: scenarios
(:mod:`.scenario`, :mod:`.scenario_schema`), cloud snapshots
(:mod:`.snapshot`), the run on simulated time (:mod:`.simulation`), the
analytic preview (:mod:`.preview`), timelines and their charts
(:mod:`.timeline`, :mod:`.timeline_chart`) and the approval plan's default
previewer (:mod:`.plan_preview`, set on ``Engine`` by the package root).

The engine, its core, the workflows and the plug-ins never import this
package (tests/test_layers.py)."""
