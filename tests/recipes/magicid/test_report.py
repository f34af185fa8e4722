"""The MagicID report: what it says when the evaluation found no face."""



from prefopt_recipes.common.metrics import (
    UNAVAILABLE,
)


def test_the_reports_no_face_note_reads_counts_and_ignores_other_protocols():
    from prefopt_recipes.magicid.report import _no_face_note

    rows = [{"model": "base", "faceless_frames": "16/16"}, {"model": "final", "faceless_frames": "3/16"},
            {"model": "identity LoRA", "faceless_frames": UNAVAILABLE}]  # all_frames_mean_reference: no count
    note = _no_face_note(rows)
    assert "base" in note and "final" not in note and "identity" not in note
    assert _no_face_note(rows[1:]) == ""
