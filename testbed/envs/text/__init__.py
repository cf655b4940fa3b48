"""The text search task: real words, a real retriever, Search-R1's tags.

``task`` (the text task over the token core), ``qa_data`` (Search-R1's QA and corpus files, and
``TextQA``, the questions a text task asks), ``bm25`` (a lexical retriever over any corpus) and
``retrieval_server`` (Search-R1's ``/retrieve`` HTTP endpoint over BM25, and its client).
"""
