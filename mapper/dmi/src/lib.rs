//! The dmi twin backend of the ros2 mapper.
