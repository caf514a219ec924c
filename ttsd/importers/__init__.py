"""Importers: public benchmarks into `problem.json` files, one module per source.

    report = ttsd.importers.lcb.import_lcb("code_generation_lite_v6_public.jsonl", "problems/lcb",
                 visible_fraction=0.5, seed=0, start_date=date(2025, 2, 1), end_date=date(2025, 5, 1))
    report = ttsd.importers.humaneval.import_humaneval("problems/humaneval")
    report = ttsd.importers.mbpp_plus.import_mbpp_plus("MbppPlus.jsonl", "problems/pool/mbpp_plus", make_sandbox("local"))

`lcb` (LiveCodeBench `code_generation_lite`), `humaneval`, `mbpp_plus` (EvalPlus's MBPP+: runs the
canonical solutions through the judge to compute expected outputs); `common`: what they share
(the report, ids, JSONL lines, and the note that says how a folder was imported). This package sits
above the judge; `ttsd.problems` (the format and loading) imports neither.
"""
