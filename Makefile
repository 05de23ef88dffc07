# pspnet_ros developer entry points. `make demo` and `make test` set up .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED_WHEELS ?= ../shared/wheels
STAMP := $(VENV)/.setup-stamp
# torch/torchvision: the versions the environment provides locally (CUDA build, works on CPU).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
ROS_WHEELS := ros-kilted-rclpy ros-kilted-sensor-msgs ros-kilted-std-msgs \
	ros-kilted-diagnostic-msgs ros-kilted-std-srvs ros-kilted-builtin-interfaces \
	ros-kilted-ament-index-python ros-kilted-lifecycle-msgs ros-kilted-rmw-fastrtps-cpp \
	ros-kilted-nav-msgs
LAUNCH_WHEELS := launch launch-xml launch-yaml launch-testing launch-ros launch-testing-ros lark
# The `ros2` command and colcon (test/workspace builds and drives the installed package with them).
# ros2cli names psutil, packaging, argcomplete only in its package.xml: without psutil most verbs
# fail with "Failed to load entry point".
CLI_WHEELS := ros2cli ros2pkg ros2run ros2launch ros2topic ros2node ros2param ros2service \
	ros2interface ros2lifecycle rosidl-runtime-py ros-kilted-rcl-interfaces ros-kilted-ament-package \
	colcon-common-extensions psutil packaging argcomplete

.PHONY: setup test test-fast demo bench gpu-check clean-demo
setup: $(STAMP)

$(STAMP): setup.py Makefile
	@start=$$(date +%s); \
	test -x $(PY) || $(PYTHON) -m venv $(VENV); \
	$(PY) -m pip install -q --upgrade pip && \
	$(PY) -m pip install -q $(TORCH_SPEC) && \
	$(PY) -m pip install -q $(ROS_WHEELS) "pytest<9" && \
	if [ -d "$(SHARED_WHEELS)" ]; then \
	  $(PY) -m pip install -q --find-links $(SHARED_WHEELS) $(LAUNCH_WHEELS) $(CLI_WHEELS); \
	else echo "note: $(SHARED_WHEELS) not found; launch and workspace tests need launch/launch_ros/launch_testing, colcon and the ros2 CLI (a ROS 2 install has them)"; fi && \
	$(PY) -m pip install -q -e ".[dev]" && \
	touch $(STAMP) && echo "setup done in $$(( $$(date +%s) - start )) s"

# pytest exit code 5 (no tests collected) is a failure, not a pass.
test: setup
	@$(PY) -m pytest test; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

demo: setup
	$(PY) -m pspnet_ros.tools.demo

bench: setup
	$(PY) -m pspnet_ros.tools.cli bench

gpu-check: setup
	bash benchmarks/gpu_check.sh

clean-demo:
	rm -rf demo_out
