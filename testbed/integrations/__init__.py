"""Carry the registry's objectives to real LLMs: a Hugging Face policy on the text search task with
a BM25 tool or a retrieval server (``hf_run``, used by ``testbed.run`` for ``policy.kind="hf"``),
Search-R1 data (``qa_data``), and plug-ins for TRL (``trl``) and verl (``verl``). Each needs the
``hf`` extra: ``pip install -c constraints.txt -e ".[hf]"``."""
