"""Prompts given to predict.py (--box, --points, --boxes-json, --coco) are checked alike, before any work:
each mistake (a number that is not finite, not numbers, the wrong count, an empty box, a prompt outside
its image, an image the prompt file names that is not there) stops with one line naming the prompt, and
the file and image it is of; a box partly outside its image and a point on its border are used."""

from __future__ import annotations

import json

import pytest

import predict
from tests.conftest import TINY, cli, forbid_work
from tests.ondisk import decode_rle, write_image


@pytest.mark.parametrize("case, expected", [
    ("no_images", "is neither an image file nor a folder"),
    ("unknown_image", "image(s) of the prompt file are not in --images (e.g. 'other.png'), none is"),
    ("bad_boxes", "The boxes of 'a.png' in"),
])
def test_predict_prompt_mistakes(tmp_path, capsys, case, expected):
    write_image(tmp_path / "images/a.png")
    table = {"unknown_image": {"other.png": [[0, 0, 5, 5]]}, "bad_boxes": {"a.png": [[0, 0, 5]]}}.get(case, {})
    (tmp_path / "boxes.json").write_text(json.dumps(table))
    images = tmp_path / ("missing" if case == "no_images" else "images")
    code, message = cli(predict.main, ["--images", str(images), "--boxes-json", str(tmp_path / "boxes.json"),
                                       "--out", str(tmp_path / "out"), *TINY], capsys)
    assert code == 1 and expected in message
    assert not (tmp_path / "out").exists()


PROMPT_MISTAKES = {
    "box_nan": (["--box", "nan,0,5,5"], None, "--box 'nan,0,5,5' holds a number that is not finite"),
    "box_inf": (["--box", "0,0,inf,5"], None, "--box '0,0,inf,5' holds a number that is not finite"),
    "box_text": (["--box", "a,b,c,d"], None, "--box 'a,b,c,d' is not numbers separated by commas"),
    "box_three": (["--box", "1,2,3"], None, "--box '1,2,3' has 3 number(s); a box is 4: x1, y1, x2, y2"),
    "box_five": (["--box", "1,2,3,4,5"], None, "has 5 number(s); a box is 4"),
    "box_flat_x": (["--box", "5,0,5,10"], None, "--box '5,0,5,10' is an empty box: x1, y1, x2, y2 needs x1 < x2"),
    "box_swapped_x": (["--box", "10,0,5,10"], None, "is an empty box"),
    "box_swapped_y": (["--box", "0,10,5,2"], None, "is an empty box"),
    "box_right_of_image": (["--box", "70,0,90,10"], None, "--box '70,0,90,10' lies outside the image 'a.png' "
                                                        "(60 x 40 pixels)"),
    "box_above_image": (["--box", "0,-30,10,-5"], None, "lies outside the image 'a.png'"),
    "second_box": (["--box", "0,0,5,5", "--box", "0,0,5"], None, "--box '0,0,5' has 3 number(s)"),
    "points_nan": (["--points", "nan,1"], None, "--points 'nan,1' holds a number that is not finite"),
    "points_odd": (["--points", "1,2,3"], None, "--points '1,2,3' has 3 number(s); points are pairs x,y"),
    "points_text": (["--points", "x,1"], None, "--points 'x,1' is not numbers separated by commas"),
    "points_outside": (["--points", "5,5,61,10"], None, "--points '5,5,61,10': the point 61,10 lies outside"),
    "points_negative": (["--points=-1,5"], None, "the point -1,5 lies outside the image 'a.png'"),
    "json_nan": (["--boxes-json"], '{"a.png": [[NaN, 0, 5, 5]]}', "box 0 holds a number that is not finite"),
    "json_infinity": (["--boxes-json"], '{"a.png": [[0, 0, 5, 5], [0, 0, Infinity, 5]]}',
                      "box 1 holds a number that is not finite"),
    "json_string": (["--boxes-json"], '{"a.png": [["1", 2, 3, 4]]}', "box 0 is not a list of numbers"),
    "json_bool": (["--boxes-json"], '{"a.png": [[true, 0, 5, 5]]}', "box 0 is not a list of numbers"),
    "json_null": (["--boxes-json"], '{"a.png": [null]}', "box 0 is not a list of numbers"),
    "json_short": (["--boxes-json"], '{"a.png": [[0, 0, 5]]}', "box 0 has 3 number(s); a box is 4"),
    "json_flat": (["--boxes-json"], '{"a.png": [[0, 5, 10, 5]]}', "box 0 is an empty box"),
    "json_swapped": (["--boxes-json"], '{"a.png": [[10, 0, 5, 5]]}', "box 0 is an empty box"),
    "json_outside": (["--boxes-json"], '{"a.png": [[100, 100, 200, 200]]}', "box 0 lies outside the image 'a.png'"),
    "coco_zero_width": (["--coco"], [[0, 0, 0, 5]], "the bbox of annotation 1 is an empty box: x, y, width, height "
                                                    "needs width and height more than 0"),
    "coco_negative_height": (["--coco"], [[0, 0, 5, -3]], "the bbox of annotation 1 is an empty box"),
    "coco_nan": (["--coco"], [[0, 0, 5, 5], [float("nan"), 0, 5, 5]], "the bbox of annotation 2 holds a number"),
    "coco_text": (["--coco"], ["0,0,5,5"], "the bbox of annotation 1 is not a list of numbers"),
    "coco_outside": (["--coco"], [[60, 0, 5, 5]], "the bbox of annotation 1 lies outside the image 'a.png'"),
}


@pytest.mark.parametrize("case", sorted(PROMPT_MISTAKES))
def test_every_way_of_giving_prompts_is_checked_alike(tmp_path, capsys, monkeypatch, case):
    forbid_work(monkeypatch, predict)
    write_image(tmp_path / "images/a.png")
    argv, content, expected = PROMPT_MISTAKES[case]
    if argv == ["--boxes-json"]:
        (tmp_path / "boxes.json").write_text(content)
        argv = ["--boxes-json", str(tmp_path / "boxes.json")]
    elif argv == ["--coco"]:
        annotations = [{"id": i + 1, "image_id": 1, "bbox": bbox} for i, bbox in enumerate(content)]
        (tmp_path / "coco.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png"}],
                                                        "annotations": annotations}))
        argv = ["--coco", str(tmp_path / "coco.json")]
    code, message = cli(predict.main, ["--images", str(tmp_path / "images"), *argv, "--out", str(tmp_path / "out"),
                                       *TINY], capsys)
    assert code == 1 and expected in message and "Traceback" not in message
    if content is not None:  # the file and the image are named
        assert "The boxes of 'a.png' in" in message
    assert not (tmp_path / "out").exists()


def test_prompts_partly_outside_the_image_and_points_on_its_border_are_used(tmp_path):
    """A detector's box may overrun the image: it is kept as given (SAM takes coordinates beyond
    the border) and gives a mask; a point on the border is inside."""
    height, width = 192, 256
    write_image(tmp_path / "images/a.png", height=height, width=width)
    common = ["--images", str(tmp_path / "images"), "--format", "rle", *TINY]
    boxes = predict.main(common + ["--out", str(tmp_path / "boxes"), "--box=-20,-10,60,50",
                                   "--box", f"200,150,{width + 40},{height + 30}"])
    points = predict.main(common + ["--out", str(tmp_path / "points"), "--points", f"0,0,{width},{height}"])
    assert [m["instance"] for m in boxes] == [0, 1] and [m["instance"] for m in points] == [0]
    for entry in boxes + points:
        assert decode_rle(entry["segmentation"]).shape == (height, width)
    assert (tmp_path / "boxes/a_overlay.png").is_file() and (tmp_path / "points/masks.json").is_file()
