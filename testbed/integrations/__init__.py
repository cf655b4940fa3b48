"""Plug-ins that carry the registry's objectives into other frameworks: TRL (``trl``) and verl
(``verl``, registered in verl's workers by ``verl_plugin``). Each needs the ``hf`` extra:
``pip install -c constraints.txt -e ".[hf]"``. Policies live in ``testbed.policies``, the text task
in ``testbed.envs.text``."""
