/*
 * fill.S - ferry's test guest: a multiboot (v1) kernel of ~120 bytes, no libc, no stack beyond a
 * few words. It fills guest RAM from 2 MiB up to (end of RAM - 1 MiB) with xorshift32
 * pseudo-random words, so QEMU's zero-page detection cannot shortcut a migration, then halts.
 *
 * Built with -DDIRTY_FOREVER it never halts: it keeps rewriting the same range with fresh
 * values, dirtying memory about as fast as TCG can store, so a bandwidth-capped pre-copy
 * migration does not converge without help (downtime steps, auto-converge or post-copy).
 * With -DPACE=N as well it spins N turns of `loop` after each 4 KiB page, so it dirties memory
 * at a fraction of that speed: a rate that is a fixed share of the CPU time QEMU gives the vCPU,
 * which is what auto-converge's CPU throttle acts on.
 *
 * Progress goes to COM1 (the domain's <serial type='file'>), one byte each:
 *   'F'  started filling
 *   '.'  one full pass over the range written
 *   'H'  halted (idle variant only, after the first '.')
 * The test fixtures read that file to know when the RAM is filled - no sleeps.
 *
 * Build (no multilib needed, there is no libc):
 *   gcc -m32 -c [-DDIRTY_FOREVER] fill.S -o fill.o
 *   ld -m elf_i386 -N -Ttext=0x100000 fill.o -o fill.elf
 * and boot with <os><kernel>fill.elf</kernel></os> (QEMU's -kernel loads multiboot images).
 */
        .set    MB_MAGIC, 0x1BADB002
        .set    MB_FLAGS, 0x00000003            /* page-align modules, want mem_* fields */
        .set    COM1, 0x3f8
        .set    FILL_START, 0x200000            /* 2 MiB: clear of this kernel and the BIOS */

        .text
        .code32
        .align  4
multiboot_header:
        .long   MB_MAGIC
        .long   MB_FLAGS
        .long   -(MB_MAGIC + MB_FLAGS)

        .globl  _start
_start:
        cli
        movl    $0x90000, %esp                  /* multiboot leaves %esp undefined */
        /* %ebx -> multiboot info; mem_upper (KiB above 1 MiB) is at offset 8.
           End of RAM = 1 MiB + mem_upper KiB; stop 1 MiB short of it. */
        movl    8(%ebx), %edi
        shll    $10, %edi                       /* %edi = end of RAM - 1 MiB = fill end */
        movl    $0x9e3779b9, %eax               /* xorshift32 state (any non-zero seed) */
        movb    $'F', %cl
        call    putc

pass:
        movl    $FILL_START, %esi
1:      /* xorshift32: x ^= x << 13; x ^= x >> 17; x ^= x << 5 */
        movl    %eax, %edx
        shll    $13, %edx
        xorl    %edx, %eax
        movl    %eax, %edx
        shrl    $17, %edx
        xorl    %edx, %eax
        movl    %eax, %edx
        shll    $5, %edx
        xorl    %edx, %eax
        movl    %eax, (%esi)
        addl    $4, %esi
#ifdef PACE
        testl   $0xfff, %esi                    /* at each page boundary: PACE idle turns */
        jnz     4f
        movl    $PACE, %ecx
3:      loop    3b
4:
#endif
        cmpl    %edi, %esi
        jb      1b

        movb    $'.', %cl
        call    putc
#ifdef DIRTY_FOREVER
        jmp     pass
#else
        movb    $'H', %cl
        call    putc
2:      hlt                                     /* interrupts are off: stays here */
        jmp     2b
#endif

/* putc: write %cl to COM1; clobbers %edx only (the state in %eax is preserved) */
putc:
        pushl   %eax
        movb    %cl, %al
        movw    $COM1, %dx
        outb    %al, %dx
        popl    %eax
        ret
