/* autograd/host_device.h — VNM_HOST_DEVICE marks an inline function that both the C sources and the
 * CUDA kernels compile, so the two backends share one definition of a formula. */
#ifndef VNM_HOST_DEVICE_H
#define VNM_HOST_DEVICE_H

#ifdef __CUDACC__
#define VNM_HOST_DEVICE __host__ __device__
#else
#define VNM_HOST_DEVICE
#endif

#endif
