// Stand-in for ATen/mps/MPSStream.h, for running torch/csrc/mps/StreamBindings.h on Linux.
// It declares only the stream-pool API of the contract (coord/STREAM_API.md) that the
// bindings call; harness.cpp implements it with plain C++ (no Metal).
#pragma once

#include <c10/core/Stream.h>
#include <c10/macros/Export.h>

namespace at::mps {

enum class SyncType {
  NONE,
  COMMIT,
  COMMIT_AND_WAIT,
  COMMIT_AND_CONTINUE,
  COMMIT_ADAPTIVE,
};

class MPSStream {
 public:
  explicit MPSStream(c10::Stream stream);
  c10::Stream unwrap() const {
    return _stream;
  }
  void synchronize(SyncType syncType);
  bool query();

 private:
  c10::Stream _stream;
};

constexpr int kMPSStreamsPerPool = 33;

MPSStream* getCurrentMPSStream();
MPSStream* getDefaultMPSStream();
void setCurrentMPSStream(MPSStream* stream);
MPSStream* getStreamFromPool();
MPSStream* getStreamByID(c10::StreamId id);
void setMPSPerThreadStreams(bool enabled);
bool getMPSPerThreadStreams();

} // namespace at::mps
