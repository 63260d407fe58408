//! The mqtt twin backend of the ros2 mapper.
