"""Reading COFW's MATLAB test file: v5 with scipy.io.loadmat, v7.3 (HDF5) with h5py.

`COFW_test_color.mat` holds `IsT` (a cell of 507 images), `phisT` (507×87: 29 x, 29 y,
29 occlusion flags) and `bboxesT` (507×4: x, y, w, h). Some copies are MATLAB v5 files,
others v7.3, which is HDF5 underneath and stores every array transposed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceptor_edge.errors import UserError

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
COFW_KEYS = ("IsT", "phisT")


def read_cofw_mat(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """The images and point rows of a COFW test `.mat`.

    Returns:
        (images, phis): N uint8 arrays, H×W (grey) or H×W×3, and N×87 float64 rows
        (29 x, 29 y, 29 occlusion flags; MATLAB's 1-based pixels).

    Raises:
        UserError: The file is not a MATLAB file, lacks `IsT`/`phisT`, their counts differ,
            or it is v7.3 and h5py is not installed.
    """
    with open(path, "rb") as file:
        head = file.read(520)  # v7.3: a 128-byte MATLAB text header, then HDF5's superblock at byte 512
    is_hdf5 = HDF5_MAGIC in (head[:8], head[512:520]) or b"MATLAB 7.3" in head[:128]
    images, phis = _read_hdf5(path) if is_hdf5 else _read_v5(path)
    if phis.ndim != 2 or phis.shape[1] < 58:
        raise UserError(f"{path}: phisT is {phis.shape}, expected N×87 (29 x, 29 y, 29 occlusion flags)")
    if len(images) != len(phis):
        raise UserError(f"{path}: IsT holds {len(images)} images but phisT {len(phis)} rows")
    return images, phis


def _read_v5(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    try:
        from scipy.io import loadmat
    except ImportError:
        raise UserError(f"{path}: reading COFW needs scipy: pip install 'faceptor-edge[paper-sets]'") from None
    try:
        mat = loadmat(path, variable_names=COFW_KEYS)
    except (ValueError, TypeError, OSError) as error:
        raise UserError(f"{path}: not a readable MATLAB file ({error})") from None
    missing = [key for key in COFW_KEYS if key not in mat]
    if missing:
        raise UserError(f"{path}: no {', '.join(missing)} (is it COFW_test_color.mat?)")
    cells = np.asarray(mat["IsT"], dtype=object).ravel()
    images = [np.asarray(cell) for cell in cells]
    return images, np.asarray(mat["phisT"], dtype=np.float64)


def _read_hdf5(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    try:
        import h5py
    except ImportError:
        raise UserError(f"{path} is a MATLAB v7.3 (HDF5) file: reading it needs h5py (pip install h5py), "
                        "or save it again as v5 in MATLAB/Octave (save -v7)") from None  # fmt: skip
    with h5py.File(path, "r") as mat:
        missing = [key for key in COFW_KEYS if key not in mat]
        if missing:
            raise UserError(f"{path}: no {', '.join(missing)} (is it COFW_test_color.mat?)")
        # v7.3 stores MATLAB's column-major arrays as their transposes: phisT is 87×N on disk.
        refs = np.asarray(mat["IsT"]).ravel()
        images = [np.asarray(mat[ref]).T for ref in refs]  # C×W×H or W×H -> H×W×C or H×W
        return images, np.asarray(mat["phisT"], dtype=np.float64).T
