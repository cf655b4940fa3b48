"""The ``scenario_search`` study (declared in testbed/studies/ablations.py): how the isdd scenario
was chosen, at its documented size or --smoke.

    python experiments/scenario_search.py [--smoke] [--workers N]
"""

from testbed.studies import CATALOG
from testbed.sweep.experiment import experiment_main

if __name__ == "__main__":
    experiment_main(CATALOG["scenario_search"]())
