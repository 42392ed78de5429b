/* A statically linked hello world: the floor of exec-to-exit on this
 * machine, against which bench/lambda_cold.sh sets imgsvc's cold start
 * (measured in the same run, as the machine's speed drifts). */
#include <stdio.h>

int main(void) {
  puts("hello, world");
  return 0;
}
