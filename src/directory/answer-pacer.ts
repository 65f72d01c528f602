/**
 * Lets a burst of answers out a few at a time. When a relay's lease expires,
 * thousands of held lookups are answered within a few etcd transactions,
 * each completing hundreds of them in one turn of the event loop. An HTTP
 * answer leaves at once on its own socket, but gRPC answers wait in HTTP/2
 * until the loop comes round, so the gRPC parties (the nodes, which create
 * the sessions) heard 1-1.5 s after the WebSocket parties in a 2,000-session
 * re-join (bench/rejoin.ts). Here every `perTurn` answers the loop comes
 * round once (setImmediate), so every transport's answers leave in the order
 * they were ready, and I/O goes on between them.
 */
export class AnswerPacer {
  private readonly waiting: (() => void)[] = [];
  private scheduled = false;

  constructor(private readonly perTurn: number) {}

  /** Resolves on a later turn of the event loop, at most `perTurn` callers a turn, first come first served. */
  turn(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.waiting.push(resolve);
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(this.release);
      }
    });
  }

  /** Callers waiting for their turn now. */
  get pending(): number {
    return this.waiting.length;
  }

  private readonly release = (): void => {
    this.scheduled = false;
    for (const resolve of this.waiting.splice(0, this.perTurn)) resolve();
    if (this.waiting.length > 0) {
      this.scheduled = true;
      setImmediate(this.release);
    }
  };
}
