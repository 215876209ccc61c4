"""Computer-vision parts: convolution from scratch, CNNs, transfer learning, detection, segmentation."""
