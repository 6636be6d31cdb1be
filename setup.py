"""Install vla_ros as an ament_python package (colcon) or with pip."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'vla_ros'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    package_data={PACKAGE: ['sim/assets/*.xml', 'models/*.json', 'models/*/*.json',
                            'models/*/*.safetensors']},
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        (f'share/{PACKAGE}/launch', glob('launch/*.launch.py')),
        (f'share/{PACKAGE}/config/robots', glob('config/robots/*.yaml')),
        (f'share/{PACKAGE}/config/action_spaces', glob('config/action_spaces/*.yaml')),
        (f'share/{PACKAGE}/config/policies', glob('config/policies/*.yaml')),
        (f'share/{PACKAGE}/config/dds', glob('config/dds/*.xml')),
    ],
    install_requires=['setuptools'],
    zip_safe=False,
    maintainer='vla_ros maintainers',
    maintainer_email='maintainers@vla-ros.dev',
    description='Vision-Language-Action policies as real-time ROS 2 nodes.',
    license='Apache-2.0',
    python_requires='>=3.10',
    entry_points={
        'console_scripts': [
            'vla-ros = vla_ros.cli:main',
            'inference_node = vla_ros.nodes.inference_node:main',
            'driver_node = vla_ros.nodes.driver_node:main',
        ],
    },
)
