"""ament_python build of the relidar ROS 2 package (the node is a thin wrapper over the relidar core)."""

from glob import glob

from setuptools import setup

PACKAGE = "relidar_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=[PACKAGE],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/rviz", glob("rviz/*.rviz")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="relidar maintainers",
    maintainer_email="relidar@example.org",
    description="ROS 2 node labelling every lidar point with an open-vocabulary class from a relidar model bundle.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            f"segmenter = {PACKAGE}.segmenter_node:main",
        ],
    },
)
