"""sweep: a grid of DVC experiments on Ray, each trial a real experiment of the user's commit.

__main__.py  the command: its arguments, the plan (which points to run), the landing of each trial
grid.py      the -S arguments in DVC's own grammar -> named points, with the params each runs with
repo.py      the user's repository: HEAD as a git bundle, its experiments, the DVC remote, landing
cluster.py   Ray: a cluster joined, or a local Ray on loopback with a token; its noise kept in a log
address.py   a cluster's address checked in seconds: answers, is a Ray head, takes our token, is here
probe.py     the address check's own process: does a Ray head answer there, and take our token?
trial.py     one trial on a node: clone, dvc exp run, dvc push, the experiment back as a bundle
report.py    the bar, the line per trial, the table at the end
"""
