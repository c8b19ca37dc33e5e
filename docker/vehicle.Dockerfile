# Vehicle image: ROS 2 Jazzy + ONNX Runtime (GPU) + TensorRT + relidar + the relidar_ros node.
# No PyTorch: the node needs only a model bundle, numpy and an inference runtime.
#
#   docker build -f docker/vehicle.Dockerfile -t relidar/vehicle .
#   docker run --rm --gpus all --net host --ipc host -v /path/to/bundle:/bundle:ro relidar/vehicle \
#       ros2 launch relidar_ros segmenter.launch.py bundle:=/bundle input:=/points_raw
#
# --ipc host (or a shared /dev/shm) lets Fast DDS's shared-memory transport reach other containers.
#
# relidar lives in a virtual environment (/opt/venv, made with --system-site-packages so it sees the
# apt-installed ROS Python packages). colcon writes the node's console script with the shebang of the
# Python that runs colcon, so the package is built by the venv's Python (`/opt/venv/bin/python -m
# colcon`), not by apt's `colcon` (/usr/bin/python3, which cannot import relidar); the build step
# checks the shebang it produced.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
FROM ${CUDA_IMAGE}

ARG ROS_DISTRO=jazzy
ENV ROS_DISTRO=${ROS_DISTRO} DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 PYTHONUNBUFFERED=1

# ROS 2 from packages.ros.org (Ubuntu 24.04 = Jazzy's platform, Python 3.12): the exec_depends of
# ros2_ws/src/relidar_ros/package.xml, less rviz2 (no display on the vehicle; compose runs RViz
# from the desktop image).
RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates gnupg python3-venv \
    && curl -sSL https://raw.githubusercontent.com/ros/rosdistro/master/ros.key -o /usr/share/keyrings/ros-archive-keyring.gpg \
    && echo "deb [signed-by=/usr/share/keyrings/ros-archive-keyring.gpg] http://packages.ros.org/ros2/ubuntu noble main" \
       > /etc/apt/sources.list.d/ros2.list \
    && apt-get update && apt-get install -y --no-install-recommends \
       ros-${ROS_DISTRO}-ros-base ros-${ROS_DISTRO}-rmw-fastrtps-cpp ros-${ROS_DISTRO}-sensor-msgs \
       ros-${ROS_DISTRO}-visualization-msgs ros-${ROS_DISTRO}-diagnostic-msgs ros-${ROS_DISTRO}-launch-ros \
       ros-${ROS_DISTRO}-tf2-msgs ros-${ROS_DISTRO}-rosgraph-msgs ros-${ROS_DISTRO}-ros2bag \
       ros-${ROS_DISTRO}-rosbag2-storage-mcap python3-jsonschema python3-colcon-common-extensions \
    && rm -rf /var/lib/apt/lists/*

# A venv that sees the apt-installed rclpy; versions pinned by the repo's requirements files, flattened
# into one constraints file (pip would install, not just constrain, what a nested -r line names).
# GPU runtimes pinned to the base image's CUDA 12.8 + cuDNN 9 (tests/test_vehicle_image.py checks it):
# onnxruntime-gpu 1.26.0 is the last PyPI build for CUDA 12 (1.27+ need CUDA 13), TensorRT 10.x is the
# last with BuilderFlag.FP16 (11.0 removed it; `relidar export tensorrt --fp16` uses it), cuda-python 12.8.
WORKDIR /opt/relidar
COPY requirements.txt requirements-runtime.txt pyproject.toml README.md ./
RUN python3 -m venv --system-site-packages /opt/venv \
    && grep -hv '^-r' requirements-runtime.txt requirements.txt > /tmp/pins.txt \
    && /opt/venv/bin/pip install --no-cache-dir -c /tmp/pins.txt \
       numpy numba pyyaml pydantic typer rich safetensors pillow matplotlib ftfy rosbags onnx jsonschema \
    && /opt/venv/bin/pip install --no-cache-dir onnxruntime-gpu==1.26.0 tensorrt-cu12==10.16.1.11 cuda-python==12.8.0
COPY relidar/ relidar/
COPY ros2_ws/src/relidar_ros/ ros2_ws/src/relidar_ros/
RUN /opt/venv/bin/python -m pip install --no-cache-dir --no-deps .
RUN . /opt/ros/${ROS_DISTRO}/setup.sh \
    && /opt/venv/bin/python -m colcon --log-base /tmp/colcon-log build --base-paths ros2_ws/src \
       --build-base /tmp/colcon-build --install-base /opt/relidar_ws/install --merge-install \
    && head -1 /opt/relidar_ws/install/lib/relidar_ros/segmenter | grep -qx '#!/opt/venv/bin/python' \
    && rm -rf /tmp/colcon-build /tmp/colcon-log
# the voxelization loops and the fused backend's convolutions compiled into numba's on-disk cache now, not on
# the vehicle's first scan
RUN /opt/venv/bin/python -c "from relidar.core import fused_loops, voxel_loops; voxel_loops.warm_up(); fused_loops.warm_up()"

ENV PATH=/opt/venv/bin:${PATH} \
    RMW_IMPLEMENTATION=rmw_fastrtps_cpp \
    FASTDDS_DEFAULT_PROFILES_FILE=/opt/relidar_ws/install/share/relidar_ros/config/fastdds_shm.xml
RUN printf '#!/bin/bash\nset -e\nsource /opt/ros/%s/setup.bash\nsource /opt/relidar_ws/install/setup.bash\nexec "$@"\n' \
      "${ROS_DISTRO}" > /entrypoint.sh && chmod +x /entrypoint.sh
ENTRYPOINT ["/entrypoint.sh"]
CMD ["ros2", "run", "relidar_ros", "segmenter", "--help"]
