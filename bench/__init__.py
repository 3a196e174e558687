"""The benchmark behind ``make bench``: every scenario of issue 4 on flashsale and on a baseline, back to back.

run.py (the command) -> scenarios.py (what each scenario does) on sites.py (the
deployments: servers.py for the baseline and the monolith) -> load.py (one k6
run, read by timeseries.py into measure.py's figures) -> results.py, targets.py
-> report.py and charts.py. micro.py, profile.py and net.py are the
micro-benchmarks, py-spy, and the TIME_WAIT drain.
"""
