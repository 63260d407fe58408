//! The kube twin backend of the ros2 mapper.
