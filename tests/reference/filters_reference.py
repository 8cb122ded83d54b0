"""The map filters of SeLo with OpenCV: v1's medianBlur and v2's GaussianBlur (sigma 0), for
amfmn's heat-map tests.

Usage: filters_reference.py IN.png MEDIAN_SIZE GAUSSIAN_SIZE OUT_MEDIAN.png OUT_GAUSSIAN.png
"""
import sys

import cv2

gray = cv2.imread(sys.argv[1], cv2.IMREAD_GRAYSCALE)
median, gaussian = int(sys.argv[2]), int(sys.argv[3])
cv2.imwrite(sys.argv[4], cv2.medianBlur(gray, median))
cv2.imwrite(sys.argv[5], cv2.GaussianBlur(gray, (gaussian, gaussian), 0))
