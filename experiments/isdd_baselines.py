"""The ``isdd_baselines`` study (declared in testbed/studies/ablations.py), at its documented size or --smoke.

python experiments/isdd_baselines.py [--smoke] [--workers N]
"""

from testbed.studies import CATALOG
from testbed.sweep.experiment import experiment_main

if __name__ == "__main__":
    experiment_main(CATALOG["isdd_baselines"]())
