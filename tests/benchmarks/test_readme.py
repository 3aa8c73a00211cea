"""The README's benchmark tables are the committed results, not numbers typed by hand."""

from benchmarks import readme


def test_readme_block_matches_the_committed_results():
    assert readme.main(["--check"]) == 0, "run: python -m benchmarks.readme"


def test_block_names_every_case_and_the_server_headline():
    import json

    text = readme.block()
    for result in json.loads((readme.RESULTS / "results.json").read_text())["results"]:
        assert f"`{result['case']}`" in text
    assert "| concurrency | batching on | batching off |" in text and "| request | REST | gRPC |" in text
