// Where slices and persistent buffers live on a node's NVMe device (a directory on it):
// names only, computed alike by the controller (what a job is told) and the agents (what
// they make), without touching the device.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

namespace loom::burstbuffer {

// A persistent buffer: DEVICE/.loom/bb_SLICE.img, mounted at DEVICE/bb_SLICE. The slice is
// its name on the node, unique there (the controller's choice: UID@NAME).
std::filesystem::path buffer_image(const std::filesystem::path& device, const std::string& slice);
std::filesystem::path buffer_mount(const std::filesystem::path& device, const std::string& slice);

// A job's slice: the image at DEVICE/.loom/job_ID.img, mounted at DEVICE/job_ID (the job's
// LOOM_BB_DIR).
std::filesystem::path slice_image(const std::filesystem::path& device, std::uint64_t job);
std::filesystem::path slice_mount(const std::filesystem::path& device, std::uint64_t job);

}  // namespace loom::burstbuffer
