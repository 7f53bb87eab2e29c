"""Image datasets: digits (bundled), CIFAR-10/100 (binary release), SVHN (.mat), CHMNIST.

Each source returns the pool as (x float32 (N, C, H, W) normalised, y int64).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from mia_ray.errors import DatasetFileError

IMAGE_BYTES = 3 * 32 * 32
# The authors' constants (docs/method.md, "Data"): CIFAR-100 reuses CIFAR-10's,
# SVHN is scaled to [-1, 1], CHMNIST takes ImageNet's after a resize to 32x32.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
SVHN_MEAN = SVHN_STD = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _normalise(pixels: np.ndarray, mean, std) -> np.ndarray:
    """uint8 (N, 3, H, W) -> float32 per-channel standardised, without a float64 copy."""
    x = pixels.astype(np.float32)
    x /= 255.0
    x -= np.asarray(mean, np.float32)[:, None, None]
    x /= np.asarray(std, np.float32)[:, None, None]
    return x


def _require_file(dataset: str, path: str, how: str) -> None:
    if not os.path.isfile(path):
        raise DatasetFileError(dataset, path, "file not found", how)
    if os.path.getsize(path) == 0:
        raise DatasetFileError(dataset, path, "file is empty", how)


class Digits:
    """scikit-learn's bundled 8x8 digits: no files, no download."""

    name = "digits"

    def files(self, root: str) -> list[str]:
        return []

    def check(self, root: str, download: bool) -> None:
        return None

    def load(self, root: str) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import load_digits

        data, target = load_digits(return_X_y=True)
        x = data / 16.0
        # Standardised with the pool's own statistics, like the CIFAR constants are.
        x = (x - x.mean()) / x.std()
        return x.reshape(-1, 1, 8, 8).astype(np.float32), target.astype(np.int64)


@dataclass(frozen=True)
class Cifar:
    """The binary CIFAR release: fixed-size records of label byte(s) + 3072 pixel bytes."""

    name: str
    folder: str
    parts: tuple[str, ...]  # official train files then the test file
    label_bytes: int
    label_at: int  # CIFAR-100 records hold (coarse, fine): the fine label is byte 1
    num_classes: int
    url: str
    md5: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def files(self, root: str) -> list[str]:
        return [os.path.join(root, self.folder, p) for p in self.parts]

    def how(self, root: str) -> str:
        return (f"Download and extract {self.url} into {root} (it creates {self.folder}/), "
                "or pass --download. The python (pickle) CIFAR release is not read.")

    def check(self, root: str, download: bool) -> None:
        paths = self.files(root)
        if download and not all(os.path.isfile(p) for p in paths):
            from torchvision.datasets.utils import download_and_extract_archive

            download_and_extract_archive(self.url, download_root=root, md5=self.md5,
                                         remove_finished=True)
        record = self.label_bytes + IMAGE_BYTES
        for path in paths:
            _require_file(self.name, path, self.how(root))
            size = os.path.getsize(path)
            if size % record:
                raise DatasetFileError(
                    self.name, path,
                    f"size {size} bytes is not a multiple of the {record}-byte record "
                    f"({self.label_bytes} label byte(s) + {IMAGE_BYTES} pixel bytes)",
                    self.how(root))

    def load(self, root: str) -> tuple[np.ndarray, np.ndarray]:
        pixels, labels = [], []
        record = self.label_bytes + IMAGE_BYTES
        for path in self.files(root):
            with open(path, "rb") as fh:
                recs = np.frombuffer(fh.read(), dtype=np.uint8).reshape(-1, record)
            y = recs[:, self.label_at].astype(np.int64)
            bad = np.flatnonzero(y >= self.num_classes)
            if bad.size:
                raise DatasetFileError(
                    self.name, path,
                    f"record {bad[0]} has label {y[bad[0]]}, outside 0..{self.num_classes - 1}",
                    self.how(root))
            # Pixel bytes are the R, G, B planes in row-major order: (3, 32, 32) as is.
            pixels.append(recs[:, self.label_bytes:].reshape(-1, 3, 32, 32))
            labels.append(y)
        return _normalise(np.concatenate(pixels), self.mean, self.std), np.concatenate(labels)


class Svhn:
    """SVHN cropped digits: train_32x32.mat and test_32x32.mat (MATLAB v5)."""

    name = "svhn"
    url = "http://ufldl.stanford.edu/housenumbers/"
    parts = (("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
             ("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"))
    mean = SVHN_MEAN
    std = SVHN_STD

    def files(self, root: str) -> list[str]:
        return [os.path.join(root, "svhn", f) for f, _ in self.parts]

    def how(self, root: str) -> str:
        return (f"Download train_32x32.mat and test_32x32.mat from {self.url} into "
                f"{os.path.join(root, 'svhn')}, or pass --download.")

    def check(self, root: str, download: bool) -> None:
        for (fname, md5), path in zip(self.parts, self.files(root)):
            if download and not os.path.isfile(path):
                from torchvision.datasets.utils import download_url

                download_url(self.url + fname, os.path.dirname(path), fname, md5)
            _require_file(self.name, path, self.how(root))
            with open(path, "rb") as fh:
                head = fh.read(19)
            # scipy reads v4/v5 files; v7.3 is HDF5 and an HTML error page is neither.
            if head != b"MATLAB 5.0 MAT-file":
                raise DatasetFileError(self.name, path,
                                       "not a MATLAB 5.0 .mat file (header "
                                       f"{head[:19]!r})", self.how(root))

    def load(self, root: str) -> tuple[np.ndarray, np.ndarray]:
        from scipy.io import loadmat

        pixels, labels = [], []
        for path in self.files(root):
            mat = loadmat(path, variable_names=["X", "y"])
            x, y = mat.get("X"), mat.get("y")
            if x is None or y is None or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
                raise DatasetFileError(
                    self.name, path,
                    "expected arrays X of shape (32, 32, 3, N) and y of shape (N, 1), got "
                    f"X {None if x is None else x.shape}, y {None if y is None else y.shape}",
                    self.how(root))
            y = y.reshape(-1).astype(np.int64)
            if len(y) != x.shape[3]:
                raise DatasetFileError(self.name, path,
                                       f"X holds {x.shape[3]} images but y {len(y)} labels",
                                       self.how(root))
            bad = np.flatnonzero((y < 1) | (y > 10))
            if bad.size:
                raise DatasetFileError(self.name, path,
                                       f"label {y[bad[0]]} at {bad[0]} is outside 1..10",
                                       self.how(root))
            pixels.append(np.transpose(x, (3, 2, 0, 1)).astype(np.uint8))
            labels.append(y % 10)  # SVHN writes the digit 0 as label 10
        return _normalise(np.concatenate(pixels), self.mean, self.std), np.concatenate(labels)


class Chmnist:
    """Kather 2016 colorectal histology tiles: one folder per class, 8 classes."""

    name = "chmnist"
    num_classes = 8
    how_text = ("Download Kather_texture_2016_image_tiles_5000.zip from "
                "https://zenodo.org/record/53169 and put its 8 class folders "
                "(01_TUMOR ... 08_EMPTY) directly in {folder}.")

    def folder(self, root: str) -> str:
        return os.path.join(root, "chmnist")

    def files(self, root: str) -> list[str]:
        return [os.path.join(self.folder(root), "<class_name>", "<image file>")]

    def how(self, root: str) -> str:
        return self.how_text.format(folder=self.folder(root))

    def classes(self, root: str) -> list[str]:
        # Hidden folders (.ipynb_checkpoints, .DS_Store dirs) are not classes.
        with os.scandir(self.folder(root)) as it:
            return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))

    def check(self, root: str, download: bool) -> None:
        folder = self.folder(root)
        if not os.path.isdir(folder):
            raise DatasetFileError(self.name, folder, "folder not found", self.how(root))
        classes = self.classes(root)
        if len(classes) != self.num_classes:
            raise DatasetFileError(
                self.name, folder,
                f"found {len(classes)} class folders {classes}, expected {self.num_classes}",
                self.how(root))
        for c in classes:
            path = os.path.join(folder, c)
            if not any(f.lower().endswith(IMAGE_EXTENSIONS) for f in os.listdir(path)):
                raise DatasetFileError(self.name, path, "class folder has no image files",
                                       self.how(root))

    def load(self, root: str) -> tuple[np.ndarray, np.ndarray]:
        from torchvision import datasets, transforms

        chmnist = self

        class Folder(datasets.ImageFolder):
            def find_classes(self, directory):
                names = chmnist.classes(root)
                return names, {c: i for i, c in enumerate(names)}

        tf = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor(),
                                 transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
        images = Folder(self.folder(root), transform=tf)
        x = np.empty((len(images), 3, 32, 32), dtype=np.float32)
        for i, (path, _) in enumerate(images.samples):
            try:
                x[i] = images[i][0].numpy()
            except OSError as e:  # PIL's UnidentifiedImageError is an OSError
                raise DatasetFileError(self.name, path, f"unreadable image ({e})",
                                       self.how(root)) from e
        return x, np.asarray(images.targets, dtype=np.int64)


SOURCES = {
    "digits": Digits(),
    "cifar10": Cifar(
        name="cifar10", folder="cifar-10-batches-bin",
        parts=tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",),
        label_bytes=1, label_at=0, num_classes=10,
        url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        md5="c32a1d4ab5d03f1284b67883e8d87530",
        mean=CIFAR10_MEAN, std=CIFAR10_STD),
    "cifar100": Cifar(
        name="cifar100", folder="cifar-100-binary", parts=("train.bin", "test.bin"),
        label_bytes=2, label_at=1, num_classes=100,
        url="https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
        md5="03b5dce01913d631647c71ecec9e9cb8",
        mean=CIFAR10_MEAN, std=CIFAR10_STD),
    "svhn": Svhn(),
    "chmnist": Chmnist(),
}
