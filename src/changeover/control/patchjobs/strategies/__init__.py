"""One planner per patch-job method, each ``plan(spec, progress, instances, now) -> Decision``.

``lifecycle`` runs what every job shares (start, stage, cancel, max run time, revert);
``common`` holds the shared rules (health gates, drain-and-retire, batch sizes); ``tick``
is the scratch pad of one planning pass. The method modules only say how their phases
move on.
"""
