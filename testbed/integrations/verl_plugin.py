"""Import this module to register every objective as ``testbed_<name>`` in verl's policy-loss
registry. verl's workers import ``actor_rollout_ref.model.external_lib`` when they build the model,
so pointing that option here makes the registration happen inside each Ray worker; a bad
``TESTBED_OBJECTIVE`` fails here, when the worker starts, naming the field."""

from testbed.integrations.verl import check_environment, register

check_environment()
REGISTERED = register()
