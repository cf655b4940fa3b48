"""Carry the registry's objectives to real LLMs: a Hugging Face policy on the text search task with
a BM25 tool (``hf_run``, used by ``testbed.run`` for ``policy.kind="hf"``), and plug-ins for TRL (``trl``) and verl (``verl``). Each needs the
``hf`` extra: ``pip install -c constraints.txt -e ".[hf]"``."""
